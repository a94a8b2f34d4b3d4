#!/usr/bin/env python3
"""Issue 5's proof on the GPU: fikitd runs MPS, jobs, and keeps their kernel measurements.

One script, in the foreground (PID 1 on the GPU machine is not systemd):
  1. fikitd starts on a private config with `[mps] mode = "manage"`; ready = its socket answers
     `hello` (and READY=1 on a NOTIFY_SOCKET this script owns), MPS `running` in `status`.
  2. A high and a low job are submitted with `fikitctl submit --prio high|low --wait` at the same
     time (short unmodified PyTorch programs: bench/worker.py standalone); both must end with 0.
     While they run, the daemon's clients, the MPS servers and their clients are sampled.
  3. Their kernel measurements are in SQLite: `fikitctl profiles show <prog> --json`.
  4. The same two programs run again; each must start with the stored profile merged. Evidence:
     the daemon wrote `profile.<slot>` (sampled while the job ran), and the library's FIKIT_STATS
     of the second run has kernels whose `dur_us.n` exceeds what the run itself can have sampled
     (a kernel launched c times is sampled at most min(c, 8) + ceil(c / 16) times), which only a
     merged profile explains.
  5. SIGTERM: STOPPING=1, exit 0 within 10 s, "MPS control daemon stopped" in the log, and no
     MPS control/server process of this pipe directory left.
Writes OUT/summary.json (every check with its evidence), OUT/fikitd.log, OUT/jobs/, OUT/stats/.

    python3 bench/verify_daemon.py --lib build/gpu/interpose/libfikit.so --out bench/results/X/daemon
    python3 bench/verify_daemon.py --fake --out /tmp/vd   # CPU: fake driver, stand-in MPS
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

REPO = benchlib.REPO_ROOT
FAKEBIN = REPO / "tests" / "fakebin"
FAKE_SRC = REPO / "tests" / "fakecuda"
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from fikitd.notify import NotifyListener  # noqa: E402 - the daemon's own package, from this checkout

WARM_LAUNCHES = 8  # interpose/src/launch.c: every launch measured until a kernel has this many
SAMPLE_EVERY = 16  # then 1 in FIKIT_SAMPLE (default 16)
FAKE_DURATIONS = "hp_conv=300,hp_fc=100,lp_small=200,lp_long=3000,*=50"


# ---------------------------------------------------------------------------------------------- pieces


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def proc_env(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def mps_processes(pipe: Path) -> list[dict[str, Any]]:
    """Live nvidia-cuda-mps-control / -server processes that belong to this pipe directory.

    A process whose environment cannot be read is listed too (marked), so it is never missed."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        argv = proc_cmdline(pid)
        kind = next(
            (
                k
                for a in argv[:2]
                for k in ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server")
                if os.path.basename(a) == k
            ),
            None,
        )
        if kind is None:
            continue
        env = proc_env(pid)
        if env is not None and env.get("CUDA_MPS_PIPE_DIRECTORY") not in (str(pipe), None):
            continue
        out.append({"pid": pid, "kind": kind, "env_read": env is not None})
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def own_samples_max(count: int) -> int:
    """The most duration samples a run can take of a kernel it launched `count` times."""
    return min(count, WARM_LAUNCHES) + math.ceil(count / SAMPLE_EVERY)


def build_fake(dest: Path) -> Path:
    """tests/fakecuda's libcuda.so.1 (as tests/conftest.py builds it)."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise SystemExit("verify_daemon: --fake needs a C compiler")
    dest.mkdir(parents=True, exist_ok=True)
    lib = dest / "libcuda.so.1"
    subprocess.run(
        [
            cc,
            "-std=c11",
            "-O2",
            "-fPIC",
            "-shared",
            f"-I{REPO / 'interpose' / 'include'}",
            "-Wl,-soname,libcuda.so.1",
            "-Wl,-Bsymbolic",
            "-o",
            str(lib),
            str(FAKE_SRC / "fakecuda.c"),
            "-lpthread",
        ],
        check=True,
    )
    with contextlib.suppress(FileExistsError):
        (dest / "libcuda.so").symlink_to("libcuda.so.1")
    return dest


# ---------------------------------------------------------------------------------------------- the run


class Verify:
    NAME = "verify_daemon"  # in the closing line; subclasses (verify_mps_fault.py) name themselves

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t0 = time.monotonic()
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="fkv", dir="/tmp"))  # short: Unix socket paths
        self.rt = self.base / "run"
        self.state = self.base / "state"
        self.pipe = self.base / "mps_pipe"
        self.mps_log = self.base / "mps_log"
        self.cfg = self.base / "fikit.toml"
        self.sock = self.rt / "fikitd.sock"
        self.domain = self.rt / "gpu0"
        self.log_path = self.out / "fikitd.log"
        self.stats = self.out / "stats"
        self.fake_dir: Path | None = None
        self.lib = benchlib.find_lib(a.lib)
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify: NotifyListener | None = None
        self.checks: list[dict[str, Any]] = []
        self.samples: dict[str, Any] = {
            "clients": {},
            "mps_servers": set(),
            "mps_clients": {},
            "profiles": {},
        }
        self._sampling = False
        self.mps_pids: set[int] = set()
        # a second run into the same folder starts clean (stats are matched by program and run)
        for d in (self.stats, self.out / "jobs"):
            shutil.rmtree(d, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    # --------------------------------------------------------------------------------- helpers
    def elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    def check(self, name: str, ok: bool | None, evidence: Any) -> bool:
        """ok None: not applicable here (said why in the evidence)."""
        self.checks.append({"check": name, "ok": ok, "t_s": self.elapsed(), "evidence": evidence})
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[ok]
        print(
            f"[{self.elapsed():6.1f}s] {mark} {name}: {json.dumps(evidence, default=str)[:400]}", flush=True
        )
        return bool(ok)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FIKIT_", "NOTIFY_", "WATCHDOG_", "CUDA_MPS_", "FAKECUDA_"))
            and k != "LD_PRELOAD"
        }
        env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["FIKIT_SOCKET"] = str(self.sock)
        if self.lib:
            env["FIKIT_LIBRARY"] = self.lib
        if self.fake_dir is not None or self.a.standin_mps:
            env["PATH"] = f"{FAKEBIN}:{env.get('PATH', '/usr/bin:/bin')}"
        if self.fake_dir is not None:
            env["LD_LIBRARY_PATH"] = str(self.fake_dir)
            env["FAKECUDA_DURATIONS"] = FAKE_DURATIONS
            env["FAKECUDA_TIMELINE"] = str(self.base / "timeline")
        return env

    def ask(self, cmd: str) -> tuple[int, str]:
        """One nvidia-cuda-mps-control command on our pipe directory (the stand-in's PATH on CPU)."""
        return benchlib.mps_ask(self.pipe, self.mps_log, cmd, timeout=10, path=self.env().get("PATH"))

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        from fikitd.protocol import Client

        with Client(self.sock, timeout=10.0) as c:
            return c.call(op, **args)

    def config_text(self) -> str:
        user = pwd.getpwuid(os.getuid()).pw_name
        return (
            "[paths]\n"
            f'runtime_dir = "{self.rt}"\n'
            f'state_dir = "{self.state}"\n'
            f'log_dir = "{self.base / "log"}"\n\n'
            "[mps]\n"
            'mode = "manage"\n'
            f'pipe_dir = "{self.pipe}"\n'
            f'log_dir = "{self.mps_log}"\n\n'
            "[scheduler]\n"
            'mode = "fikit"\n\n'
            "[access]\n"
            f'high_users = ["{user}"]\n\n'
            "[metrics]\n"
            "enabled = false\n"
        )

    def job_argv(self, role: str, run: int) -> list[str]:
        py = sys.executable
        if self.fake_dir is not None:
            wl = str(FAKE_SRC / "workload.py")
            # about 1.5 s each, so that the sampler sees the clients registered
            n = str(self.a.fake_repeat)
            if role == "hp":
                return [py, wl, "--kernels", "hp_conv:20000,hp_fc:30000", "--repeat", n]
            return [py, wl, "--kernels", "lp_small:20000,lp_long:30000", "--repeat", n, "--no-sync"]
        model = self.a.hp_model if role == "hp" else self.a.lp_model
        out = self.out / "jobs" / f"{role}-run{run}.worker.json"
        return [
            py,
            str(REPO / "bench" / "worker.py"),
            "--model",
            model,
            "--device",
            self.a.device,
            *(["--tiny"] if self.a.device == "cpu" else []),
            "--warmup-s",
            str(self.a.warmup_s),
            "--duration",
            str(self.a.duration_s),
            "--out",
            str(out),
        ]

    # --------------------------------------------------------------------------------- sampling
    def _sample_loop(self) -> None:
        """Clients and profile files, every 50 ms (a fake job lasts a second or two)."""
        while self._sampling:
            with contextlib.suppress(Exception):
                st = self.call("status")
                for c in st.get("clients") or []:
                    key = f"{c.get('prog')}:{c.get('pid')}"
                    self.samples["clients"][key] = {
                        k: c.get(k) for k in ("prog", "pid", "slot", "prio", "prio_requested", "job", "uid")
                    }
            for f in list(self.domain.glob("profile.*")):
                with contextlib.suppress(OSError):
                    size = f.stat().st_size
                    self.samples["profiles"][f.name] = max(size, self.samples["profiles"].get(f.name, 0))
            time.sleep(0.05)

    def _mps_loop(self) -> None:
        """MPS servers and their clients (each question is a process: slower, on its own thread)."""
        while self._sampling:
            rc, out = self.ask("get_server_list")
            if rc == 0:
                for srv in out.split():
                    if srv.isdigit():
                        self.samples["mps_servers"].add(int(srv))
                        rc2, out2 = self.ask(f"get_client_list {srv}")
                        if rc2 == 0:
                            self.samples["mps_clients"].setdefault(srv, set()).update(
                                int(x) for x in out2.split() if x.isdigit()
                            )
            time.sleep(0.2)

    # --------------------------------------------------------------------------------- jobs
    def submit(self, role: str, run: int) -> subprocess.Popen[str]:
        prog = f"vd-{role}"
        env = self.env()
        env["FIKIT_PROG"] = prog
        env["FIKIT_STATS"] = str(self.stats / f"{prog}.run{run}.%p.json")
        argv = [
            sys.executable,
            "-m",
            "cli",
            "--socket",
            str(self.sock),
            "submit",
            "--prio",
            "high" if role == "hp" else "low",
            "--name",
            f"{prog}-run{run}",
            "--wait",
            "--json",
            "--",
            *self.job_argv(role, run),
        ]
        return subprocess.Popen(
            argv, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run_jobs(self, run: int) -> dict[str, dict[str, Any]]:
        """Both jobs at once; per role: rc, job record, worker output, FIKIT_STATS."""
        self.stats.mkdir(parents=True, exist_ok=True)
        (self.out / "jobs").mkdir(parents=True, exist_ok=True)
        procs = {role: self.submit(role, run) for role in ("hp", "lp")}
        res: dict[str, dict[str, Any]] = {}
        for role, p in procs.items():
            try:
                out, err = p.communicate(timeout=self.a.job_timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += f"\nverify_daemon: fikitctl submit --wait still waiting after {self.a.job_timeout_s}s"
            job: dict[str, Any] = {}
            with contextlib.suppress(json.JSONDecodeError):
                job = json.loads(out) if out.strip() else {}
            res[role] = {"cli_rc": p.returncode, "job": job, "cli_stderr": err.strip()[-1500:]}
            self.copy_job_logs(job, role, run)
            res[role]["stats"] = self.read_stats(f"vd-{role}", run)
            wo = self.out / "jobs" / f"{role}-run{run}.worker.json"
            with contextlib.suppress(OSError, json.JSONDecodeError):
                w = json.loads(wo.read_text())
                res[role]["worker"] = {
                    k: w.get(k) for k in ("pid", "model", "preloaded", "env", "gpu", "warmup_iters")
                } | {"requests": len(w.get("records") or [])}
        return res

    def copy_job_logs(self, job: dict[str, Any], role: str, run: int) -> None:
        d = job.get("log_dir")
        if not d or not Path(d).is_dir():
            return
        dest = self.out / "jobs" / f"{role}-run{run}"
        dest.mkdir(parents=True, exist_ok=True)
        for f in Path(d).iterdir():
            if f.is_file() and f.stat().st_size < 4 << 20:
                shutil.copy(f, dest / f.name)

    def read_stats(self, prog: str, run: int) -> dict[str, Any] | None:
        files = sorted(self.stats.glob(f"{prog}.run{run}.*.json"))
        if not files:
            return None
        # a wrapped job may have forked: the process with the most launches is the program
        best = None
        for f in files:
            with contextlib.suppress(OSError, json.JSONDecodeError):
                d = json.loads(f.read_text())
                if best is None or sum((d.get("launches") or {}).values()) > sum(
                    (best.get("launches") or {}).values()
                ):
                    best = d
        return best

    def profile(self, prog: str) -> list[dict[str, Any]] | None:
        """`fikitctl profiles show PROG --json`, retried briefly: the store is written at client EOF."""
        env = self.env()
        kernels: list[dict[str, Any]] | None = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(
                [sys.executable, "-m", "cli", "--socket", str(self.sock), "profiles", "show", prog, "--json"],
                env=env,
                cwd=str(REPO),
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if r.returncode == 0:
                with contextlib.suppress(json.JSONDecodeError):
                    kernels = json.loads(r.stdout)
                if kernels:
                    return kernels
            time.sleep(0.5)
        return kernels

    # --------------------------------------------------------------------------------- main
    def start_daemon(self) -> bool:
        for d in (self.rt, self.state, self.pipe, self.mps_log):
            d.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(self.config_text(), encoding="utf-8")
        (self.out / "fikit.toml").write_text(self.config_text(), encoding="utf-8")
        self.notify = NotifyListener(self.base / "notify.sock")
        env = self.env()
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fikitd.main", "--config", str(self.cfg)],
                env=env,
                cwd=str(REPO),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        t_start = time.monotonic()
        hello: dict[str, Any] | None = None
        status: dict[str, Any] = {}
        while time.monotonic() - t_start < self.a.ready_timeout_s:
            if self.proc.poll() is not None:
                return self.check(
                    "daemon ready", False, {"exit": self.proc.returncode, "log": self.log_tail()}
                )
            if hello is None and self.sock.exists():
                with contextlib.suppress(Exception):
                    hello = self.call("hello")
            if hello is not None:
                with contextlib.suppress(Exception):
                    status = self.call("status")
                if (status.get("mps") or {}).get("state") in ("running", "failed", "unavailable"):
                    break
            time.sleep(0.2)
        ready_s = round(time.monotonic() - t_start, 2)
        self.check(
            "daemon ready: socket answers hello",
            hello is not None,
            {"hello": hello, "after_s": ready_s, "notify": [m for _, m in self.notify.messages][:6]},
        )
        self.check(
            "READY=1 on NOTIFY_SOCKET (sdnotify or its fallback)",
            self.notify.has("READY=1"),
            [m for _, m in self.notify.messages][:6],
        )
        mps = status.get("mps") or {}
        self.check("MPS managed and running", mps.get("state") == "running", mps)
        procs = mps_processes(self.pipe)
        pidfile = self.pipe / "nvidia-cuda-mps-control.pid"
        self.mps_pids |= {p["pid"] for p in procs}
        with contextlib.suppress(OSError, ValueError):
            self.mps_pids.add(int(pidfile.read_text().split()[0]))
        self.check(
            "nvidia-cuda-mps-control process of our pipe directory",
            any(p["kind"] == "nvidia-cuda-mps-control" for p in procs),
            {"processes": procs, "pidfile": pidfile.exists()},
        )
        return hello is not None and mps.get("state") == "running"

    def stop_daemon(self) -> None:
        assert self.proc is not None and self.notify is not None
        before = mps_processes(self.pipe)
        self.mps_pids |= {p["pid"] for p in before}
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            rc = None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        took = round(time.monotonic() - t, 2)
        time.sleep(0.3)
        self.check("SIGTERM: exit 0 within 10 s", rc == 0 and took <= 10, {"exit": rc, "took_s": took})
        self.check(
            "STOPPING=1 on NOTIFY_SOCKET",
            self.notify.has("STOPPING=1"),
            [m for _, m in self.notify.messages][-4:],
        )
        log = self.log_path.read_text(errors="replace")
        # the control daemon can take a moment to exit after answering `quit`
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.mps_pids):
            time.sleep(0.2)
        left = sorted(p for p in self.mps_pids if pid_alive(p))
        rc_ask, ans = self.ask("get_server_list")
        self.check(
            "MPS stopped on shutdown",
            "MPS control daemon stopped" in log and not left and not mps_processes(self.pipe),
            {
                "log_line": "MPS control daemon stopped" in log,
                "mps_pids_before": sorted(self.mps_pids),
                "alive_after": left,
                "control_pipe_exists": (self.pipe / "control").exists(),
                "get_server_list_after": {"rc": rc_ask, "out": ans[:200]},
            },
        )

    def write_summary(self, summary: dict[str, Any]) -> None:
        summary["samples"] = {
            "clients": list(self.samples["clients"].values()),
            "mps_servers": sorted(self.samples["mps_servers"]),
            "mps_clients": {k: sorted(v) for k, v in self.samples["mps_clients"].items()},
            "profile_files": self.samples["profiles"],
        }
        summary["ok"] = all(c["ok"] is not False for c in self.checks)
        summary["wall_s"] = self.elapsed()
        benchlib.write_json(self.out / "summary.json", summary)
        failed = [c["check"] for c in self.checks if c["ok"] is False]
        print(
            f"{self.NAME}: {'ALL PASS' if not failed else 'FAILED: ' + '; '.join(failed)} "
            f"({self.elapsed():.0f}s) -> {self.out / 'summary.json'}",
            flush=True,
        )

    def kstat_size(self) -> int | None:
        """Bytes of one profile record (struct fikit_kstat), asked of libfikit.so through fikitd.shm."""
        try:
            shm = benchlib._import_shm(self.lib)
            return int(shm.layout().sizes["kstat"])
        except Exception:
            return None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def job_checks(self, run: int, res: dict[str, dict[str, Any]]) -> None:
        for role in ("hp", "lp"):
            r = res[role]
            job = r["job"]
            w = r.get("worker") or {}
            self.check(
                f"run {run}: {role} job (--prio {'high' if role == 'hp' else 'low'}) done, exit 0",
                r["cli_rc"] == 0 and job.get("state") == "done" and job.get("exit_code") == 0,
                {
                    "cli_rc": r["cli_rc"],
                    "job": {k: job.get(k) for k in ("id", "state", "exit_code", "prio", "argv", "reason")},
                    "wall_s": round((job.get("ended_at") or 0) - (job.get("started_at") or 0), 2)
                    if job.get("ended_at")
                    else None,
                    "worker": w or None,
                    "cli_stderr": r["cli_stderr"][-300:] if r["cli_rc"] else "",
                },
            )
            st = r.get("stats")
            self.check(
                f"run {run}: {role} job ran under libfikit.so (FIKIT_STATS written)",
                st is not None and sum((st.get("launches") or {}).values()) > 0,
                None
                if st is None
                else {
                    "pid": st.get("pid"),
                    "prog": st.get("prog"),
                    "prio": st.get("prio"),
                    "launches": st.get("launches"),
                    "kernels": len(st.get("kernels") or []),
                    "held_launches": st.get("held_launches"),
                },
            )

    def preload_evidence(self, prog: str, stored: list[dict[str, Any]], st: dict[str, Any] | None) -> Any:
        """Kernels of the second run whose duration sample count exceeds what that run can take alone."""
        if st is None:
            return False, {"error": "no FIKIT_STATS from the second run"}
        stored_n = {str(k.get("id")): len(k.get("dur_ring_ns") or []) for k in stored}
        merged, compared = [], 0
        for k in st.get("kernels") or []:
            kid = str(k.get("id"))
            if kid not in stored_n or not stored_n[kid]:
                continue
            compared += 1
            n = int((k.get("dur_us") or {}).get("n") or 0)
            own = own_samples_max(int(k.get("count") or 0))
            if n > own:
                merged.append(
                    {
                        "id": kid,
                        "name": str(k.get("name"))[:60],
                        "count": k.get("count"),
                        "dur_n": n,
                        "own_max": own,
                        "stored_samples": stored_n[kid],
                    }
                )
        direct = st.get("profile_kernels")  # what the library says it merged (newer libfikit.so)
        ev = {
            "prog": prog,
            "library_merged_kernels": direct,
            "stored_kernels": len(stored),
            "second_run_kernels_also_stored": compared,
            "kernels_with_merged_samples": len(merged),
            "share": round(len(merged) / compared, 3) if compared else None,
            "examples": merged[:5],
        }
        if isinstance(direct, int):
            return direct > 0 and bool(merged), ev
        return bool(merged), ev

    def run(self) -> int:
        a = self.a
        if a.fake or a.fake_cuda_dir:
            self.fake_dir = Path(a.fake_cuda_dir) if a.fake_cuda_dir else build_fake(self.base / "fakecuda")
        info = benchlib.env_info("cpu" if self.fake_dir is not None else a.device)
        summary: dict[str, Any] = {
            "what": "issue 5: fikitd manages MPS, runs a high and a low job, stores and preloads profiles",
            "date": info["date"],
            "gpu": info["gpu"] if self.fake_dir is None else "fake driver (tests/fakecuda)",
            "driver": info["driver"],
            "commit": os.environ.get("FIKIT_COMMIT") or info["commit"],
            "mps": "stand-in tests/fakebin/nvidia-cuda-mps-control"
            if self.fake_dir
            else "nvidia-cuda-mps-control",
            "lib": self.lib,
            "programs": {"hp": self.job_argv("hp", 1)[1:], "lp": self.job_argv("lp", 1)[1:]},
            "checks": self.checks,
        }
        if self.lib is None:
            self.check("libfikit.so found", False, "pass --lib (or build it: cmake --build build/gpu)")
        if self.fake_dir is None and a.device == "cuda" and not shutil.which("nvidia-cuda-mps-control"):
            self.check("nvidia-cuda-mps-control on PATH", False, os.environ.get("PATH"))
        samplers: list[threading.Thread] = []
        finished = False
        try:
            if self.lib is not None and self.start_daemon():
                self._sampling = True
                samplers = [
                    threading.Thread(target=self._sample_loop, daemon=True),
                    threading.Thread(target=self._mps_loop, daemon=True),
                ]
                for t in samplers:
                    t.start()
                res1 = self.run_jobs(1)
                self.job_checks(1, res1)
                stored: dict[str, list[dict[str, Any]]] = {}
                for role in ("hp", "lp"):
                    prog = f"vd-{role}"
                    ks = self.profile(prog) or []
                    stored[prog] = ks
                    st = res1[role].get("stats") or {}
                    run_ids = {str(k.get("id")) for k in st.get("kernels") or []}
                    st_ids = {str(k.get("id")) for k in ks}
                    self.check(
                        f"{prog}: measurements in SQLite (fikitctl profiles show {prog} --json)",
                        bool(ks) and bool(run_ids) and run_ids <= st_ids,
                        {
                            "stored_kernels": len(ks),
                            "stored_launches": sum(int(k.get("count") or 0) for k in ks),
                            "run1_kernels": len(run_ids),
                            "run1_ids_missing_from_store": len(run_ids - st_ids),
                            "with_duration_samples": sum(1 for k in ks if k.get("dur_ring_ns")),
                            "store": str(self.state),
                        },
                    )
                n_prof_before = len(self.samples["profiles"])
                res2 = self.run_jobs(2)
                self.job_checks(2, res2)
                kst = self.kstat_size()
                self.check(
                    "run 2: the daemon wrote profile.<slot> files for the registering clients",
                    len(self.samples["profiles"]) > 0,
                    {
                        "bytes": self.samples["profiles"],
                        "kernel_records": {k: v // kst for k, v in self.samples["profiles"].items()}
                        if kst
                        else None,
                        "seen_in_run1": n_prof_before,
                    },
                )
                for role in ("hp", "lp"):
                    prog = f"vd-{role}"
                    ok, ev = self.preload_evidence(prog, stored[prog], res2[role].get("stats"))
                    self.check(f"run 2: {prog} started with its stored profile merged", ok, ev)
                self._sampling = False
                for t in samplers:
                    t.join(15)
                clients = self.samples["clients"]
                self.check(
                    "clients registered with the daemon at their priorities",
                    {c.get("prio") for c in clients.values() if str(c.get("prog", "")).startswith("vd-")}
                    >= {0, 2},
                    {"clients": list(clients.values())[:8]},
                )
                servers = sorted(self.samples["mps_servers"])
                worker_pids = {
                    int((r.get("worker") or {}).get("pid") or 0) for res in (res1, res2) for r in res.values()
                } - {0}
                mps_clients = {int(p) for s in self.samples["mps_clients"].values() for p in s}
                if self.fake_dir is not None or a.standin_mps:
                    self.check(
                        "jobs were MPS clients", None, "stand-in MPS has no server: not checkable on CPU"
                    )
                else:
                    self.check(
                        "jobs were clients of the MPS server fikitd manages",
                        bool(servers) and bool(worker_pids & mps_clients),
                        {
                            "servers": servers,
                            "mps_clients": sorted(mps_clients)[:16],
                            "worker_pids": sorted(worker_pids),
                        },
                    )
            finished = True
        except Exception as e:
            finished = True
            self.check("verify_daemon ran to the end", False, repr(e)[:2000])
        finally:
            self._sampling = False
            if not finished:
                self.check("verify_daemon ran to the end", False, "interrupted (SIGTERM: the time limit?)")
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.stop_daemon()
                else:
                    self.check("daemon alive until SIGTERM", False, {"exit": self.proc.returncode})
            if self.notify is not None:
                self.notify.close()
            mps_log = self.mps_log
            for f in ("control.log", "server.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(mps_log / f, self.out / f"mps_{f}")
            shutil.rmtree(self.base, ignore_errors=True)
            self.write_summary(summary)  # also when stopped by SIGTERM (`timeout`)
        failed = [c["check"] for c in self.checks if c["ok"] is False]
        return 0 if not failed else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--lib", default=None, help="libfikit.so (default: $FIKIT_LIB or a build/ folder)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="device of the PyTorch jobs")
    p.add_argument("--fake", action="store_true", help="CPU: build tests/fakecuda, stand-in MPS on PATH")
    p.add_argument("--fake-cuda-dir", default=None, help="CPU: a built fake libcuda.so.1 directory")
    p.add_argument(
        "--standin-mps", action="store_true", help="tests/fakebin's nvidia-cuda-mps-control on PATH (CPU)"
    )
    p.add_argument("--fake-repeat", type=int, default=30, help="fake jobs: iterations")
    p.add_argument("--hp-model", default="resnet50")
    p.add_argument("--lp-model", default="resnet50_train")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--duration-s", type=float, default=3.0)
    p.add_argument("--ready-timeout-s", type=float, default=60.0)
    p.add_argument("--job-timeout-s", type=float, default=90.0)
    # `timeout` sends SIGTERM: unwind through run()'s finally (fikitd stopped, MPS with it)
    signal.signal(signal.SIGTERM, _terminate)
    return Verify(p.parse_args(argv)).run()


def _terminate(signum: int, frame: Any) -> None:
    # once: `timeout` signals the process and then its whole group, which would cut the cleanup short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
