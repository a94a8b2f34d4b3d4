#!/usr/bin/env python3
"""Issue 7 on the GPU: the MPS server, then the MPS control daemon, killed under a running job.

One script, in the foreground, on verify_daemon.py's set-up (fikitd on a private config with
`[mps] mode = "manage"`, private pipe/log/state directories, a NOTIFY_SOCKET this script owns):
  A. A long low-priority job (`fikitctl submit --prio low`, bench/worker.py resnet50_train) runs
     until it is a client of the MPS server (get_client_list) and fikitd has linked it to that
     server (`status`: mps.jobs). The server is killed with SIGKILL. The job must end `failed`
     with an exit code and a reason naming the server in `fikitctl show --json` within
     detection + `[mps] dead_server_grace_s` + 10 s (by itself, on its CUDA error, or stopped by
     fikitd after the grace); `fikitctl status --json` must report the death (mps.server_deaths,
     mps.events). A short job afterwards must get a new server and end `done`.
  B. Another long job (started beside A's follow-up job, so that their start-ups overlap) runs
     until it is an MPS client; the control daemon itself is killed with SIGKILL. fikitd must
     notice (mps.state `restarting`), restart it (`running`, restarts >= 1, its log lines), and a
     short job afterwards must run as a client of the new control daemon's server and end `done`.
     What became of the old server and of the long job is recorded: the job must end `failed`
     with a reason within the same bound as in A, or, if its server lives on, may run on with a
     record that says the control daemon went away (it is cancelled at the end).
  Then SIGTERM: fikitd exits 0 and leaves no MPS process of its pipe directory behind.
Timings (detection, restart, how long the dying job took to end) are in summary.json's `timings`.
Every step has a deadline; on any exit, SIGTERM included, every job is cancelled (then killed),
fikitd stopped, and any MPS process of the private pipe directory killed. GPU settings (compute
mode and the like) are only read, never changed.

    python3 bench/verify_mps_fault.py --lib build/gpu/interpose/libfikit.so --out bench/results/X/mps_fault
    python3 bench/verify_mps_fault.py --fake --out /tmp/vmf   # CPU: fake driver, stand-in MPS

With --fake the jobs are tests/fakecuda/workload.py on the fake driver, which joins the stand-in MPS
server; job A fails by itself on its next CUDA call, job B's long job is made to hang instead
(FAKECUDA_MPS_LOST=hang) so that fikitd's stop after the grace is rehearsed too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# this checkout's fikitd (the one the script runs as the daemon) before any installed copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib
import verify_daemon
from verify_daemon import FAKE_SRC, REPO, Verify, mps_processes, pid_alive

from fikitd.jobs import proc_session, proc_start_time

ENDED = ("done", "failed", "cancelled", "lost")
MPS_CHECK_S = 2.0  # fikitd/daemon.py MPS_CHECK_S: how often fikitd looks at MPS
KILL_GRACE_S = 10.0  # fikitd/jobs.py: SIGTERM, then SIGKILL this much later


class MpsFault(Verify):
    NAME = "verify_mps_fault"

    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__(a)
        self.deadline = self.t0 + a.budget_s
        self.timings: dict[str, Any] = {}
        self.jobs: dict[int, dict[str, Any]] = {}  # every job submitted, as last seen

    # --------------------------------------------------------------------------------- helpers
    def config_text(self) -> str:
        return (
            super()
            .config_text()
            .replace('mode = "manage"\n', f'mode = "manage"\ndead_server_grace_s = {self.a.grace_s}\n')
        )

    def left(self, want: float) -> float:
        """A step's deadline: what it wants, never past the run's budget."""
        return max(0.0, min(want, self.deadline - time.monotonic()))

    def end_bound(self) -> float:
        """How long a job whose server died may take to end: noticed, grace, SIGTERM -> SIGKILL, slack."""
        return 2 * MPS_CHECK_S + self.a.grace_s + KILL_GRACE_S + 5

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
        try:
            r = subprocess.run(
                [sys.executable, "-m", "cli", "--socket", str(self.sock), *args],
                env=env or self.env(),
                cwd=str(REPO),
                capture_output=True,
                text=True,
                timeout=max(1.0, timeout),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1, "", f"fikitctl {args[0]}: no answer within {timeout:.0f} s"
        return r.returncode, r.stdout, r.stderr.strip()[-1000:]

    def cli_json(self, *args: str) -> dict[str, Any]:
        rc, out, err = self.cli(*args, "--json", timeout=self.left(30))
        try:
            got = json.loads(out) if rc == 0 else None
        except json.JSONDecodeError:
            got = None
        return got if isinstance(got, dict) else {"fikitctl_rc": rc, "stderr": err}

    def job_argv(self, role: str, run: int) -> list[str]:  # role "long" or "short"; run: a tag number
        py = sys.executable
        if self.fake_dir is not None:
            wl = str(FAKE_SRC / "workload.py")
            if role == "long":
                return [
                    py,
                    wl,
                    "--kernels",
                    "lp_small:20000,lp_long:30000",
                    "--repeat",
                    "0",
                    "--seconds",
                    "600",
                ]
            return [py, wl, "--kernels", "lp_small:20000,lp_long:30000", "--repeat", "30"]
        long_ = role == "long"
        return [
            py,
            str(REPO / "bench" / "worker.py"),
            "--model",
            self.a.long_model if long_ else self.a.short_model,
            "--device",
            "cuda",
            "--warmup-s",
            "1" if long_ else "0.5",
            "--duration",
            "600" if long_ else str(self.a.short_duration_s),
            "--out",
            str(self.out / "jobs" / f"{role}{run}.worker.json"),
        ]

    def submit_job(
        self, tag: str, role: str, run: int, extra_env: dict[str, str] | None = None
    ) -> int | None:
        env = self.env()
        env.update(extra_env or {})
        argv = self.job_argv(role, run)
        rc, out, err = self.cli(
            "submit",
            "--prio",
            "low",
            "--name",
            f"mf-{tag}",
            "--json",
            "--",
            *argv,
            env=env,
            timeout=self.left(30),
        )
        job: dict[str, Any] = {}
        with contextlib.suppress(json.JSONDecodeError):
            job = json.loads(out) if rc == 0 else {}
        ok = rc == 0 and isinstance(job.get("id"), int)
        if ok:
            self.jobs[job["id"]] = job
        self.check(
            f"job {tag} submitted (fikitctl submit --prio low)",
            ok,
            {"rc": rc, "job": job.get("id"), "argv": argv[1:], "stderr": err},
        )
        return job["id"] if ok else None

    def show(self, job_id: int) -> dict[str, Any]:
        job: dict[str, Any] = self.call("show", job=job_id)["job"]
        self.jobs[job_id] = job
        return job

    def mps_clients(self) -> dict[int, list[int]]:
        """Our own view of MPS: each server of our pipe directory and its client pids."""
        rc, out = self.ask("get_server_list")
        servers = [int(w) for w in out.split() if w.isdigit()] if rc == 0 else []
        clients = {}
        for s in servers:
            rc2, out2 = self.ask(f"get_client_list {s}")
            clients[s] = [int(w) for w in out2.split() if w.isdigit()] if rc2 == 0 else []
        return clients

    def client_of(self, job: dict[str, Any], clients: dict[int, list[int]]) -> tuple[int, int] | None:
        """(server, client pid) if one of the job's processes (its session) is an MPS client."""
        for server, pids in clients.items():
            for pid in pids:
                if job.get("pid") and proc_session(pid) == job["pid"]:
                    return server, pid
        return None

    def wait_client(self, tag: str, job_id: int) -> tuple[int, int] | None:
        """Until the job is an MPS client (our view) and fikitd has linked it to that server."""
        t = time.monotonic()
        deadline = t + self.left(self.a.client_timeout_s)
        seen: tuple[int, int] | None = None
        linked: list[int] = []
        seen_s = None
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.show(job_id)
            if job.get("state") in ENDED:
                break
            if seen is None:
                seen = self.client_of(job, self.mps_clients())
                seen_s = round(time.monotonic() - t, 2) if seen else None
            linked = (self.call("status")["mps"].get("jobs") or {}).get(str(job_id)) or []
            if seen is not None and seen[0] in linked:
                break
            time.sleep(0.25)
        ok = seen is not None and seen[0] in linked
        self.check(
            f"job {tag} is a client of the MPS server, and fikitd knows it",
            ok,
            {
                "server": seen[0] if seen else None,
                "client_pid": seen[1] if seen else None,
                "fikitd_links": linked,
                "client_after_s": seen_s,
                "linked_after_s": round(time.monotonic() - t, 2),
                "job": {k: job.get(k) for k in ("id", "state", "pid", "exit_code", "reason")},
            },
        )
        return seen if ok else None

    def poll_job(self, job_id: int, since: float, seen: dict[str, float | None]) -> dict[str, Any]:
        """One look at the job: when its record first said why (MPS), when it had ended."""
        job = self.show(job_id)
        now = round(time.monotonic() - since, 2)
        if seen.get("job_told_s") is None and "MPS" in str(job.get("reason") or ""):
            seen["job_told_s"] = now
        if seen.get("job_ended_s") is None and job.get("state") in ENDED:
            seen["job_ended_s"] = now
        return job

    def watch_end(
        self, job_id: int, since: float, bound: float, seen: dict[str, float | None]
    ) -> dict[str, Any]:
        """Poll until the job has ended, at most until since + bound."""
        deadline = since + self.left(bound)
        job = self.poll_job(job_id, since, seen)
        while job.get("state") not in ENDED and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.poll_job(job_id, since, seen)
        return job

    def job_evidence(self, tag: str, job_id: int) -> dict[str, Any]:
        """`fikitctl show --json`, and the tail of the job's stderr (its CUDA error, if any)."""
        shown = self.cli_json("show", str(job_id))
        self.copy_job_logs(shown, f"mf-{tag}", 1)
        err = ""
        with contextlib.suppress(OSError, TypeError):
            err = (Path(shown["log_dir"]) / "stderr").read_bytes()[-1500:].decode(errors="replace")
        return {
            "show": {
                k: shown.get(k) for k in ("id", "state", "exit_code", "reason", "started_at", "ended_at")
            },
            "stderr_tail": err.strip().splitlines()[-6:],
        }

    def run_short(self, tag: str, run: int, what: str, not_server: int | None) -> None:
        """A short job to the end, sampling which MPS server it is a client of."""
        job_id = self.submit_job(tag, "short", run)
        if job_id is None:
            return
        t = time.monotonic()
        deadline = t + self.left(self.a.short_timeout_s)
        servers: set[int] = set()
        as_client = None
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.show(job_id)
            if job.get("state") in ENDED:
                break
            clients = self.mps_clients()
            servers |= set(clients)
            as_client = as_client or self.client_of(job, clients)
            time.sleep(0.2)
        ev = self.job_evidence(tag, job_id)
        shown = ev["show"]
        fresh = as_client is not None and as_client[0] != not_server
        self.check(
            what,
            shown.get("state") == "done" and shown.get("exit_code") == 0 and fresh,
            {
                **ev,
                "servers_seen": sorted(servers),
                "client": as_client,
                "old_server": not_server,
                "took_s": round(time.monotonic() - t, 2),
            },
        )

    def status_mps(self) -> dict[str, Any]:
        mps: dict[str, Any] = self.call("status")["mps"]
        return mps

    # --------------------------------------------------------------------------------- A: server
    def phase_server(self) -> int | None:
        """Kill the server under job A; the killed server's pid (None if it never came to that)."""
        job_id = self.submit_job("A", "long", 1)
        if job_id is None:
            return None
        link = self.wait_client("A", job_id)
        if link is None:
            return None
        server, client = link
        ours = [p["pid"] for p in mps_processes(self.pipe) if p["kind"] == "nvidia-cuda-mps-server"]
        if server not in ours:  # never SIGKILL anything but an MPS server of our own pipe directory
            self.check(
                "A: the server is an nvidia-cuda-mps-server of our pipe directory",
                False,
                {"server": server, "ours": ours},
            )
            return None
        time.sleep(self.left(self.a.run_before_kill_s))  # kernels in flight when the server dies
        deaths_before = int(self.status_mps().get("server_deaths") or 0)
        os.kill(server, signal.SIGKILL)
        killed = time.monotonic()
        seen: dict[str, float | None] = {"fikitd_noticed_s": None, "job_told_s": None, "job_ended_s": None}
        deadline = killed + self.left(self.end_bound())
        while time.monotonic() < deadline:
            mps = self.status_mps()
            if seen["fikitd_noticed_s"] is None and int(mps.get("server_deaths") or 0) > deaths_before:
                seen["fikitd_noticed_s"] = round(time.monotonic() - killed, 2)
            self.poll_job(job_id, killed, seen)
            if seen["job_ended_s"] is not None and seen["fikitd_noticed_s"] is not None:
                break
            time.sleep(0.1)
        ev = self.job_evidence("A", job_id)
        shown = ev["show"]
        reason = str(shown.get("reason") or "")
        ended_by = "fikitd stopped it after the grace" if "fikitd stopped it" in reason else "by itself"
        self.timings["server_kill"] = {
            **seen,
            "ended_by": ended_by,
            "server": server,
            "client_pid": client,
            "bound_s": self.end_bound(),
        }
        self.check(
            "A: the job whose MPS server was killed ended failed, with an exit code and a reason naming "
            "the server, in bounded time",
            shown.get("state") == "failed"
            and shown.get("exit_code") not in (None, 0)
            and f"MPS server (pid {server})" in reason
            and seen["job_ended_s"] is not None,
            {**ev, **seen, "ended_by": ended_by, "bound_s": self.end_bound()},
        )
        status = self.cli_json("status")
        mps = status.get("mps") or {}
        events = [e.get("event") for e in mps.get("events") or [] if isinstance(e, dict)]
        self.check(
            "A: fikitctl status --json reports the dead server (mps.server_deaths, mps.events); MPS running",
            mps.get("state") == "running"
            and int(mps.get("server_deaths") or 0) > deaths_before
            and any(f"server {server} died" in str(e) for e in events),
            {
                "state": mps.get("state"),
                "server_deaths": mps.get("server_deaths"),
                "servers": mps.get("servers"),
                "events": events[-5:],
                "noticed_s": seen["fikitd_noticed_s"],
            },
        )
        return server

    # --------------------------------------------------------------------------------- B: control
    def phase_control(self, job_id: int) -> None:
        link = self.wait_client("B", job_id)
        if link is None:
            return
        server, _client = link
        # the daemon is the one started with -d; its front ends (fikitd's probes, ours) come and go
        daemons = [
            p["pid"]
            for p in mps_processes(self.pipe)
            if p["kind"] == "nvidia-cuda-mps-control" and "-d" in verify_daemon.proc_cmdline(p["pid"])
        ]
        pidfile = self.pipe / "nvidia-cuda-mps-control.pid"
        if not daemons:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
                daemons = [pid] if pid_alive(pid) else []
        if not daemons:
            self.check(
                "B: the MPS control daemon's pid found", False, {"processes": mps_processes(self.pipe)}
            )
            return
        before = self.status_mps()
        restarts_before = int(before.get("restarts") or 0)
        for pid in daemons:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        seen: dict[str, float | None] = {
            "detected_s": None,
            "restarted_s": None,
            "job_told_s": None,
            "job_ended_s": None,
        }
        deadline = killed + self.left(self.a.restart_timeout_s)
        while time.monotonic() < deadline:
            mps = self.status_mps()
            now = round(time.monotonic() - killed, 2)
            if seen["detected_s"] is None and mps.get("state") in ("restarting", "down"):
                seen["detected_s"] = now
            if mps.get("state") == "running" and int(mps.get("restarts") or 0) > restarts_before:
                seen["restarted_s"] = now
                seen["detected_s"] = seen["detected_s"] or now
                break
            self.poll_job(job_id, killed, seen)
            time.sleep(0.1)
        server_alive = pid_alive(server) and proc_start_time(server) is not None
        log = self.log_path.read_text(errors="replace")
        status = self.cli_json("status")
        mps = status.get("mps") or {}
        events = [str(e.get("event")) for e in mps.get("events") or [] if isinstance(e, dict)]
        self.check(
            "B: fikitd noticed the killed control daemon and restarted it (status, log lines)",
            seen["restarted_s"] is not None
            and "MPS control daemon died" in log
            and "MPS control daemon restarted" in log
            and any("control daemon died" in e for e in events)
            and any("control daemon restarted" in e for e in events),
            {
                **seen,
                "killed": daemons,
                "state": mps.get("state"),
                "restarts": mps.get("restarts"),
                "reason": mps.get("reason"),
                "events": events[-5:],
                "log_lines": [ln for ln in log.splitlines() if "MPS control daemon" in ln][-4:],
                "old_server_alive": server_alive,
                "mps_processes": mps_processes(self.pipe),
            },
        )
        # the long job: its server died with the control daemon (then it must end as in A), or lives on
        # (then the job may run on, told); either way it must not hang on a dead server
        settle = time.monotonic() + self.left(2 * MPS_CHECK_S)
        deadline = killed + self.left(self.end_bound())
        job = self.poll_job(job_id, killed, seen)
        while job.get("state") not in ENDED and time.monotonic() < deadline:
            server_alive = pid_alive(server) and proc_start_time(server) is not None
            if server_alive and time.monotonic() >= settle:
                break
            time.sleep(0.1)
            job = self.poll_job(job_id, killed, seen)
        server_alive = pid_alive(server) and proc_start_time(server) is not None
        ev = self.job_evidence("B", job_id)
        shown = ev["show"]
        reason = str(shown.get("reason") or "")
        ended = shown.get("state") in ENDED
        self.timings["control_kill"] = {
            **seen,
            "old_server": server,
            "old_server_survived": server_alive,
            "job_state_after": shown.get("state"),
            "ended_by": None
            if not ended
            else "fikitd stopped it after the grace"
            if "fikitd stopped it" in reason
            else "by itself",
        }
        if ended:
            what = "B: the job under the killed control daemon ended failed, with an exit code and a reason"
            ok = (
                shown.get("state") == "failed" and shown.get("exit_code") not in (None, 0) and "MPS" in reason
            )
        else:
            what = "B: the job under the killed control daemon runs on, on its live server, and is told"
            ok = server_alive and "MPS control daemon stopped answering" in reason
        self.check(
            what,
            ok,
            {
                **ev,
                "old_server": server,
                "old_server_alive": server_alive,
                "bound_s": self.end_bound(),
                **seen,
            },
        )
        self.run_short(
            "B2",
            2,
            "B: a new job ran as a client of the restarted control daemon's server, done",
            server if not server_alive else None,
        )

    # --------------------------------------------------------------------------------- cleanup
    def end_jobs(self) -> None:
        """Cancel every job still running (fikitd: SIGTERM, SIGKILL 10 s later), then kill what is left."""
        active = [j for j in self.jobs if self.jobs[j].get("state") not in ENDED]
        if self.proc is not None and self.proc.poll() is None:
            for j in active:
                with contextlib.suppress(Exception):
                    self.call("cancel", job=j)
            deadline = time.monotonic() + KILL_GRACE_S + 3
            while active and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    active = [j for j in active if self.show(j).get("state") not in ENDED]
                time.sleep(0.2)
        for j in active:  # never a recycled pid: its start time must match the record's
            job = self.jobs[j]
            pid, start = job.get("pid"), job.get("pid_start")
            if pid and start is not None and proc_start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        if active:
            self.check("every job ended by cancel", False, {"killed_process_groups": active})

    def kill_leftover_mps(self) -> None:
        """SIGKILL what fikitd left of MPS: only processes whose environment names our pipe directory."""
        left = [
            p for p in mps_processes(self.pipe)
            if (verify_daemon.proc_env(p["pid"]) or {}).get("CUDA_MPS_PIPE_DIRECTORY") == str(self.pipe)
        ]  # fmt: skip
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p["pid"], signal.SIGKILL)
        if left:
            self.check("no MPS process of our pipe directory left after fikitd stopped", False, left)

    # --------------------------------------------------------------------------------- main
    def run(self) -> int:
        a = self.a
        if a.fake or a.fake_cuda_dir:
            self.fake_dir = (
                Path(a.fake_cuda_dir) if a.fake_cuda_dir else verify_daemon.build_fake(self.base / "fakecuda")
            )
        info = benchlib.env_info("cpu")  # no torch child for the GPU's name: nvidia-smi's query gives it
        smi = benchlib.nvidia_smi_query()
        summary: dict[str, Any] = {
            "what": "issue 7: the MPS server, then the MPS control daemon, killed under a running fikitd job",
            "date": info["date"],
            "gpu": smi.get("gpu_smi") if self.fake_dir is None else "fake driver (tests/fakecuda)",
            "driver": info["driver"],
            "commit": os.environ.get("FIKIT_COMMIT") or info["commit"],
            "mps": "stand-in tests/fakebin" if self.fake_dir is not None else "nvidia-cuda-mps-control",
            "lib": self.lib,
            "grace_s": a.grace_s,
            "programs": {"long": self.job_argv("long", 0)[1:], "short": self.job_argv("short", 0)[1:]},
            "checks": self.checks,
            "timings": self.timings,
        }
        if self.lib is None:
            self.check("libfikit.so found", False, "pass --lib (or build it: cmake --build build/gpu)")
        if self.fake_dir is None and not shutil.which("nvidia-cuda-mps-control"):
            self.check("nvidia-cuda-mps-control on PATH", False, os.environ.get("PATH"))
        (self.out / "jobs").mkdir(parents=True, exist_ok=True)
        finished = False
        try:
            if not any(c["ok"] is False for c in self.checks) and self.start_daemon():
                killed = self.phase_server()
                # B's long job starts beside A's follow-up job: their start-ups (import, CUDA) overlap
                hang = {"FAKECUDA_MPS_LOST": "hang"} if self.fake_dir is not None else {}
                b_job = self.submit_job("B", "long", 2, hang)
                self.run_short(
                    "A2", 1, "A: the next job ran as a client of a new MPS server and ended done", killed
                )
                if b_job is not None and self.left(60) >= 30:
                    self.phase_control(b_job)
                elif b_job is not None:
                    self.check("B: time left for the control daemon kill", False, "budget spent")
            finished = True
        except Exception as e:
            finished = True
            self.check("verify_mps_fault ran to the end", False, repr(e)[:2000])
        finally:
            if not finished:
                self.check("verify_mps_fault ran to the end", False, "interrupted (SIGTERM: the time limit?)")
            with contextlib.suppress(Exception):
                self.end_jobs()
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.stop_daemon()
                else:
                    self.check("daemon alive until SIGTERM", False, {"exit": self.proc.returncode})
            self.kill_leftover_mps()
            if self.notify is not None:
                self.notify.close()
            for f in ("control.log", "server.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(self.mps_log / f, self.out / f"mps_{f}")
            shutil.rmtree(self.base, ignore_errors=True)
            self.write_summary(summary)
        return 0 if not any(c["ok"] is False for c in self.checks) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--lib", default=None, help="libfikit.so (default: $FIKIT_LIB or a build/ folder)")
    p.add_argument("--fake", action="store_true", help="CPU: build tests/fakecuda, stand-in MPS on PATH")
    p.add_argument("--fake-cuda-dir", default=None, help="CPU: a built fake libcuda.so.1 directory")
    p.add_argument("--long-model", default="resnet50_train", help="the job whose MPS goes away")
    p.add_argument("--short-model", default="resnet50", help="the job run after each fault")
    p.add_argument("--short-duration-s", type=float, default=1.0)
    p.add_argument("--grace-s", type=int, default=8, help="[mps] dead_server_grace_s of the private fikitd")
    p.add_argument("--run-before-kill-s", type=float, default=2.0, help="the job runs this long as a client")
    p.add_argument("--client-timeout-s", type=float, default=60.0, help="until a job is an MPS client")
    p.add_argument("--short-timeout-s", type=float, default=60.0)
    p.add_argument("--restart-timeout-s", type=float, default=20.0, help="until fikitd restarted MPS")
    p.add_argument("--ready-timeout-s", type=float, default=60.0)
    p.add_argument("--budget-s", type=float, default=240.0, help="no step starts a wait past this")
    p.set_defaults(device="cuda", standin_mps=False)
    # `timeout` sends SIGTERM: unwind through run()'s finally (jobs ended, fikitd stopped, MPS with it)
    signal.signal(signal.SIGTERM, verify_daemon._terminate)
    return MpsFault(p.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
