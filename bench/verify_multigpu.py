#!/usr/bin/env python3
"""Issue 8's proof on a two-GPU machine: a scheduling domain per GPU, each keeping its HP near solo.

Through the product: fikitd in the foreground on a private config (`[mps] mode = "manage"`, the
default `[scheduler]`: fikit mode, gap filling, HP first), started and stopped as
run_pairs.py does it. At the same time:
  GPU 0   HP `bert` b1 back to back            + LP `vgg16_infer`
  GPU 1   HP `resnet50` b1 back to back        + LP `resnet50_train`
  both    one LP process with a model on cuda:0 and on cuda:1 (bench/worker.py --devices 0,1;
          `resnet50_train` b32 a GPU), whose every step queues a step on each GPU
Every process runs on the GPU(s) its CUDA_VISIBLE_DEVICES names (uuids). Windows, interleaved per
repetition:
  solo_hp    both HPs, each alone on its GPU (plain processes: no MPS, no libfikit.so)
  solo_lp    both single-GPU LPs alone on their GPUs (plain)
  solo_lp2   the two-GPU LP alone (plain)
  mps_prio   both pairs and the two-GPU LP under MPS, the LPs at MPS client priority 1
  fikit      the same through fikitd: `fikitctl run --prio high|low --gpu I` for the single-GPU
             processes, `fikitctl submit --prio low --wait` for the two-GPU job
  fikit_hp   the fikit processes' HPs alone (their LPs idle): the floor fikit's HP sits on, the
             cost of MPS, the library and the daemon without any LP work to schedule
  mps_hp     the mps_prio processes' HPs alone: MPS's part of that floor (plain processes, MPS
             clients, no libfikit.so)
  fikit_off  with --floor-toggle-ms N, not a window of its own: in each fikit_hp window the fikit HPs
             switch the whole library off and on every N ms (fikit_set_bypass), and the requests
             served with it off make this row, those with it on the fikit_hp row. fikit_hp over
             fikit_off is what the library's launches cost inside the same process, registered and
             beside its idle LPs; fikit_off over mps_hp is the rest of the floor above MPS (another
             process, registration, the daemon), which a toggle in a private domain cannot see
A repetition first runs the four windows whose HPs are compared with each other side by side, in
an order that alternates (even repetitions solo_hp, fikit, fikit_hp, mps_hp; odd ones the
reverse), so a drift slower than a window weighs on both sides of a ratio alike over two
repetitions; then mps_prio, solo_lp, solo_lp2 (order(); with --extras-every N, every N-th
repetition only). With --slice-s S the four run instead as one block of slices of S seconds that
take turns (slices.py, run_block), each mode measured for --window-s in all, less
--slice-discard-s at the start of each slice. On the H200 hosts slices made the ratios noisier,
not quieter (bench/results/2026-11-26-2xh200-run9), and an LP step held in a fikit turn ends at
full speed after it, so LP figures run high: windows stay the default. With --hp-restart-every N, every HP
process is started anew before each N-th repetition (restart_hps): identical processes differ
by a few percent for their whole lives, and several generations average that out.
CPUs (benchlib.plan_cores, from /sys; --ROLE-cores lists override): each HP two physical cores on
its GPU's NUMA node, one thread of each, the siblings idle; `service`, two whole cores, for the
harness, which pins itself there first so that fikitd, the MPS daemons and fikitctl inherit them;
one CPU for a CPU-speed canary (benchlib.Canary); the LPs share the rest. Workers start on every
CPU (their build is most of the start-up) and pin every thread once built. The plan and the
topology it came from are in summary.json (cpu_plan, topology, cpu_plan_notes).
Per GPU: HP p50 and p99 over the same repetition's solo (median over repetitions, spread),
against the single-GPU targets (bench/summarize.py), and over fikit_hp (what scheduling the LPs
costs the HP beyond that floor); as a second view, the p50 and p99 of all of a mode's requests
pooled over the run over the same of solo_hp's (hp_p50_pooled_ratio: the targets stay on the
first); LP throughput over its solo and over mps_prio. Where an HP's time went: each window's
row["usage"] has what every process of it used (CPU time, its own and its serving thread's, page
faults, context switches: worker.usage_since), and summary.json's `usage` the medians per HP and
mode, per request. Host noise: each window's canary rate
(row["canary"]), and in summary.json's `noise`, per HP and mode, Pearson's r across windows
between log(HP p50) and log(1/canary rate), and the canary's spread. Per domain: the
clients fikitd had registered (`fikitctl status --json`: GPU, slot, granted priority), and the
launches the library held in each domain during the fikit windows (read from the domains' slots
around each window) and over the whole run (FIKIT_STATS `domains`), to show the two-GPU job in both
domains and held in each by that GPU's HP only.
Writes OUT/summary.json (top level: date, gpus [{index, name, uuid}], driver, commit, ...),
OUT/raw.jsonl (a line per window), OUT/verify.log is what the caller tees, OUT/logs/, OUT/stats/,
OUT/fikitd.log, OUT/status.json and OUT/top.json.

    python3 bench/verify_multigpu.py --lib build/gpu/interpose/libfikit.so --out bench/results/D-2xh100
    python3 bench/verify_multigpu.py --fake --out /tmp/mg     # CPU rehearsal: fake driver, 2 fake GPUs

--budget-s bounds the whole run: no window starts unless it, the teardown and the summary fit;
SIGTERM (timeout) unwinds through the same teardown, so OUT is complete either way.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import ctl
import run_pairs
import slices
import summarize
import verify_daemon

REPO = benchlib.REPO_ROOT
STATS_KEY = "multigpu"  # run_pairs.read_stats finds OUT/stats/<key>.<tag>.<pid>.json
MODES = ["solo_hp", "solo_lp", "solo_lp2", "mps_prio", "fikit", "fikit_hp", "mps_hp"]
SHARED = ["mps_prio", "fikit"]  # every process runs
COMPARED = [*SHARED, "fikit_hp", "mps_hp"]  # the modes whose HP latency is taken over solo_hp's
OFF = "fikit_off"  # with --floor-toggle-ms: the fikit_hp windows' requests served with the library off
NEAR = ["solo_hp", "fikit", "fikit_hp", "mps_hp"]  # the windows compared with each other: side by side
CPU_ROLES = ["hp0", "hp1", "lp0", "lp1", "lp2", "service"]  # each has a --ROLE-cores option
LAT_ROW_MAX = 1000  # a window's HP latencies go to raw.jsonl (lat_ms) up to this many


# With --slice-s, never fikit just before fikit_hp, whose LPs must be idle (an LP step held in a
# fikit turn would run on into it): backwards, fikit precedes solo_hp.
SLICE_ORDER = ["solo_hp", "fikit", "mps_hp", "fikit_hp"]
BLOCK = "block"  # with --slice-s: the NEAR modes in interleaved slices (run_block)
EXTRAS = ["mps_prio", "solo_lp", "solo_lp2"]
MODE_GROUP = {"solo_hp": "plain", "solo_lp": "plain", "solo_lp2": "plain", "mps_prio": "mpsprio",
              "fikit": "fikit", "fikit_hp": "fikit", "mps_hp": "mpsprio", OFF: "fikit"}  # fmt: skip


def order(rep: int, sliced: bool = False, extras: bool = True) -> list[str]:
    """A repetition's windows: NEAR forwards on even repetitions, backwards on odd ones (a slow
    drift adds to solo_hp's side on one and to fikit's on the next), or with --slice-s one block of
    them in slices; then, with extras, the rest."""
    near = [BLOCK] if sliced else (NEAR if rep % 2 == 0 else NEAR[::-1])
    return [*near, *(EXTRAS if extras else [])]


def per_unit(usages: list[dict[str, float]], key: str, unit: str, scale: float = 1.0) -> float | None:
    """The median over windows of usage[key] per usage[unit] (worker.usage_since), times scale."""
    return benchlib.rnd(benchlib.median(u[key] * scale / u[unit] for u in usages if u.get(unit)), 4)


def mode_keys(mode: str, roles: list[Role]) -> list[str]:
    """The processes a mode's window runs, by role key."""
    only = {"solo_hp": ["hp0", "hp1"], "solo_lp": ["lp0", "lp1"], "solo_lp2": ["lp2"],
            "fikit_hp": ["hp0", "hp1"], "mps_hp": ["hp0", "hp1"], OFF: ["hp0", "hp1"]}  # fmt: skip
    return only.get(mode, [r.key for r in roles])


def mostly_quiet(shares: dict[str, list[float]]) -> bool:
    """Every HP role has processes, and each of them had at least half its launches quiet."""
    return bool(shares) and all(v and min(v) >= 0.5 for v in shares.values())


@dataclass
class Role:
    """One process of the setup: which model, on which GPU(s), at which priority."""

    key: str  # hp0, lp0, hp1, lp1, lp2
    model: str
    gpus: list[int]
    role: str  # hp / lp
    batch: int | None = None

    @property
    def prio(self) -> str:
        return "high" if self.role == "hp" else "low"


@dataclass
class Group:
    name: str  # plain, mpsprio, fikit
    workers: dict[str, ctl.WorkerProc] = field(default_factory=dict)
    error: str | None = None


class Verify:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t0 = time.monotonic()
        self.fake = bool(a.fake or a.fake_cuda_dir)
        self.base = Path(tempfile.mkdtemp(prefix="fkmg", dir="/tmp"))  # short: Unix socket paths
        self.lib = benchlib.find_lib(a.lib)
        self.gpus: list[dict[str, Any]] = []
        self.roles = [
            Role("hp0", a.hp0, [0], "hp"),
            Role("lp0", a.lp0, [0], "lp"),
            Role("hp1", a.hp1, [1], "hp"),
            Role("lp1", a.lp1, [1], "lp"),
            Role("lp2", a.lp2, [0, 1], "lp", a.lp2_batch),
        ]
        self.groups = {g: Group(g) for g in ("plain", "mpsprio", "fikit")}
        self.daemon: run_pairs.Daemon | None = None
        self.checks: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.registered: list[dict[str, Any]] = []
        self.job: dict[str, Any] | None = None
        self.clocks: dict[int, benchlib.ClockSampler] = {}
        self.stop_reason: str | None = None
        self.out = Path(a.out) if a.out else None
        self.probes: dict[int, benchlib.FillProbe] = {}
        self.allowed = sorted(os.sched_getaffinity(0))  # before the harness pins itself
        self.cpus: dict[str, list[int]] = {}  # role -> CPUs (plan_cpus)
        self.cpu_plan: dict[str, Any] = {}
        self.canary: benchlib.Canary | None = None
        self.lat: dict[tuple[str, str], list[float]] = {}  # (mode, hp) -> every request's ms, ok windows
        self.generations: list[dict[str, Any]] = []  # HP restarts (restart_hps)
        self.startup_s = 0.0

    # --------------------------------------------------------------------------------- helpers
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.a.budget_s - self.elapsed()

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def check(self, name: str, ok: bool | None, evidence: Any) -> bool:
        """ok None: not applicable here (the evidence says why)."""
        self.checks.append({"check": name, "ok": ok, "t_s": round(self.elapsed(), 1), "evidence": evidence})
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[ok]
        self.log(f"{mark} {name}: {json.dumps(evidence, default=str)[:400]}")
        return bool(ok)

    def device(self) -> str:
        return "fake" if self.fake else "cuda"

    def fikitctl(self) -> list[str]:
        return [sys.executable, "-m", "cli"]

    # --------------------------------------------------------------------------------- set-up
    def find_gpus(self) -> None:
        if self.fake:
            sys.path.append(str(verify_daemon.FAKE_SRC))
            from workload import fake_uuid

            self.gpus = [
                {"index": i, "name": "fake GPU (tests/fakecuda)", "uuid": fake_uuid(i)} for i in (0, 1)
            ]
        else:
            self.gpus = benchlib.gpus_smi()
            # each window records the clock each GPU ran at (NVML indices are the smi's)
            self.clocks = {g["index"]: benchlib.ClockSampler(index=g["index"]) for g in self.gpus}

    def default_out(self) -> Path:
        names = {g["name"] for g in self.gpus}
        slug = (
            "fake"
            if self.fake
            else "-".join(sorted(n.split()[1].lower() for n in names if " " in n)) or "gpu"
        )
        return benchlib.BENCH_DIR / "results" / f"{dt.date.today().isoformat()}-{len(self.gpus)}x{slug}"

    def prepare_fake(self) -> None:
        """The fake driver for every process (and the stand-in MPS for fikitd), through the environment."""
        import fake_workloads

        fake_dir = (
            Path(self.a.fake_cuda_dir) if self.a.fake_cuda_dir else verify_daemon.build_fake(self.base / "fc")
        )
        os.environ["LD_LIBRARY_PATH"] = str(fake_dir)
        os.environ["FAKECUDA_DEVICES"] = "2"
        os.environ["FAKECUDA_DURATIONS"] = fake_workloads.FAKE_DURATIONS
        os.environ["FAKECUDA_TIMELINE"] = str(self.base / "timeline")
        os.environ["PATH"] = f"{verify_daemon.FAKEBIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    def plan_cpus(self) -> None:
        """Each role's CPUs (--ROLE-cores, else benchlib.plan_cores over the CPUs left), then the
        harness pins itself, every thread, to the service CPUs: fikitd, the MPS control daemon and
        server it starts, and fikitctl inherit them. Why: an HP at batch 1 runs at its host
        thread's speed, and nothing of ours should share its core."""
        a = self.a
        specs = {**{k: getattr(a, f"{k}_cores") for k in CPU_ROLES}, "canary": a.canary_cpu}
        explicit = {k: benchlib.parse_cpus(v)[: 1 if k == "canary" else None]
                    for k, v in specs.items() if v not in ("auto", "none")}  # fmt: skip
        taken = {c for cpus in explicit.values() for c in cpus}
        hps = {r.key: self.gpus[r.gpus[0]].get("bus_id") for r in self.roles
               if r.role == "hp" and r.key not in explicit}  # fmt: skip
        lps = [r.key for r in self.roles if r.role == "lp" and r.key not in explicit]
        plan = benchlib.plan_cores(
            hps,
            lps,
            hp_cores=a.hp_phys_cores,
            service_cores=0 if "service" in explicit else 2,
            canary=a.canary_cpu == "auto",
            allowed=[c for c in self.allowed if c not in taken],
        )
        self.cpus = {**plan["cpus"], **explicit}
        notes = plan["notes"] + [f"{k}: given, {specs[k]}" for k in explicit]
        pinned: int | str = 0
        if self.cpus.get("service"):
            try:
                pinned = benchlib.pin_all_threads(self.cpus["service"])
            except OSError as e:
                pinned = f"not pinned: {e!r}"
        self.cpu_plan = {"cpus": self.cpus, "topology": plan["topology"], "notes": notes,
                         "harness_threads_pinned": pinned}  # fmt: skip
        self.log(f"CPU plan {json.dumps(self.cpus)}; {plan['topology']}; notes {notes}; harness {pinned}")

    def start_canary(self) -> None:
        cpus = self.cpus.get("canary") or []
        self.canary = benchlib.Canary(cpus[0] if cpus else None, self.base / "canary")
        ok = self.canary.start()
        self.check(
            "a CPU-speed canary runs on a CPU of its own",
            True if ok else None,
            {"cpu": self.canary.cpu, "error": self.canary.error},
        )

    def start_daemon(self) -> bool:
        extra = {"FIKIT_FAKE_GPUS": ",".join(g["uuid"] for g in self.gpus)} if self.fake else {}
        d = run_pairs.Daemon(
            self.base,
            self.lib,
            mps=True,
            budget_us=None,
            template=None,
            fikitd_cmd=[sys.executable, "-m", "fikitd.main"],
            extra_env=extra,
            high_users=(pwd.getpwuid(os.getuid()).pw_name,),
        )
        ok = d.start(timeout=self.a.ready_timeout_s)
        self.daemon = d
        st = d.request({"op": "status"}) if ok else None
        res = (st or {}).get("result") or {}
        doms = [
            (g.get("index"), g.get("uuid"), (g.get("domain") or {}).get("available"))
            for g in res.get("gpus", [])
        ]
        want = [(g["index"], g["uuid"], True) for g in self.gpus]
        self.check(
            "fikitd ready, MPS managed",
            ok and (res.get("mps") or {}).get("state") == "running",
            {"error": d.error, "mps": res.get("mps")},
        )
        self.check("a domain per GPU, with its uuid", ok and doms == want, {"domains": doms, "gpus": want})
        return ok

    def env_for(self, g: str, r: Role, tag: str) -> dict[str, str]:
        env = run_pairs.base_env()
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus[i]["uuid"] for i in r.gpus)
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.base / "nomps")
        env["CUDA_MPS_LOG_DIRECTORY"] = str(self.base / "nomps")
        assert self.daemon is not None
        if g in ("mpsprio", "fikit"):
            env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.daemon.pipe)
            env["CUDA_MPS_LOG_DIRECTORY"] = str(self.daemon.mps_log)
            if r.role == "lp":
                env["CUDA_MPS_CLIENT_PRIORITY"] = "1"
        if g == "fikit":
            keep = ("FIKIT_CONFIG", "FIKIT_SOCKET", "FIKIT_LIBRARY", "PYTHONPATH")
            env.update({k: v for k, v in self.daemon.env().items() if k in keep})
            env["FIKIT_STATS"] = str(self.outdir() / "stats" / f"{STATS_KEY}.{tag}.%p.json")
            env["FIKIT_PROG"] = f"mg-{r.key}-{r.model}"  # the profile key (a job's --name is not it)
        return env

    def argv_for(self, g: str, r: Role, w: ctl.WorkerProc) -> list[str]:
        cpus = ",".join(map(str, self.cpus.get(r.key, [])))
        argv = ctl.worker_argv(
            sys.executable,
            r.model,
            self.device(),
            False,
            w.sock_path,
            w.tag,
            cpus=cpus,
            warmup_s=self.a.warmup_s,
            release_mem=r.role == "lp" and not self.fake,
            seed=self.a.seed,
            batch=r.batch,
            devices=",".join(str(i) for i in range(len(r.gpus))) if len(r.gpus) > 1 else "",
        )
        if g != "fikit":
            return argv
        name = f"mg-{r.key}-{r.model}"
        if len(r.gpus) > 1:  # the two-GPU job: submitted, run by fikitd with both GPUs it names
            return [
                *self.fikitctl(),
                "submit",
                "--prio",
                r.prio,
                "--name",
                name,
                "--wait",
                "--json",
                "--",
                *argv,
            ]
        return [
            *self.fikitctl(),
            "run",
            "--prio",
            r.prio,
            "--gpu",
            str(r.gpus[0]),
            "--name",
            name,
            "--",
            *argv,
        ]

    def spawn_all(self) -> None:
        """Workers start on every CPU (building 15 models on the service cores would slow the
        start-up) and pin themselves once built; the two-GPU job's `fikitctl submit` stays on the
        service CPUs (fikitd, there too, starts its worker)."""
        (self.base / "nomps").mkdir(exist_ok=True)
        for g in self.groups.values():
            for r in self.roles:
                self.spawn_worker(g, r)

    def spawn_worker(self, g: Group, r: Role) -> ctl.WorkerProc:
        """Role r's process of group g, started (at start-up, or anew by restart_hps)."""
        tag = f"{g.name}-{r.key}-{r.model}"
        w = ctl.WorkerProc(tag, r.model, r.role, self.base / "ctl", self.outdir() / "logs")
        w.sock_path = self.base / "ctl" / f"{g.name[:5]}{self.roles.index(r)}.sock"
        submit = g.name == "fikit" and len(r.gpus) > 1
        with benchlib.thread_affinity(self.cpus.get("service", []) if submit else self.allowed):
            w.spawn(self.argv_for(g.name, r, w), self.env_for(g.name, r, tag), cwd=str(REPO))
        g.workers[r.key] = w
        return w

    def all_workers(self) -> list[ctl.WorkerProc]:
        return [w for g in self.groups.values() for w in g.workers.values()]

    def start_workers(self) -> None:
        t = time.monotonic()
        self.spawn_all()
        workers = self.all_workers()
        ctl.connect_and_build(workers, timeout=self.a.startup_timeout_s)
        ctl.warm_up(workers, self.a.warmup_s, timeout=self.a.startup_timeout_s)
        for g in self.groups.values():
            for w in g.workers.values():
                err = w.error or (None if w.ready else "not ready after warm-up")
                want = g.name == "fikit"
                if err is None and bool((w.built or {}).get("preloaded")) != want:
                    err = f"libfikit.so {'not ' if want else ''}mapped (env {(w.built or {}).get('env')})"
                if err and not g.error:
                    g.error = f"{w.tag}: {err}"[:3000]
        self.startup_s = round(time.monotonic() - t, 1)
        self.check(
            "every process built and warmed up (fikit ones under libfikit.so, the others plain)",
            not any(g.error for g in self.groups.values()),
            {"startup_s": self.startup_s, "errors": {g.name: g.error for g in self.groups.values()}},
        )

    def restart_hps(self, rep: int) -> None:
        """Every group's HPs stopped and started anew (the LPs stay): fresh processes.

        Why: two identical processes ran a few percent apart for their whole lives
        (2026-11-25-h200-overhead/aa), so one plain and one fikit process per GPU put a fixed
        offset of that size into every ratio of a run; several generations of them average it."""
        t = time.monotonic()
        fresh: list[ctl.WorkerProc] = []
        for g in self.groups.values():
            if g.error:
                continue
            for r in self.roles:
                if r.role != "hp":
                    continue
                g.workers[r.key].stop()
                fresh.append(self.spawn_worker(g, r))
        ctl.connect_and_build(fresh, timeout=self.a.startup_timeout_s)
        ctl.warm_up(fresh, self.a.warmup_s, timeout=self.a.startup_timeout_s)
        for g in self.groups.values():
            bad = [w for w in g.workers.values() if w in fresh and (w.error or not w.ready)]
            if bad and not g.error:
                g.error = f"{bad[0].tag}: restart failed: {bad[0].error or 'not ready'}"[:3000]
        gen = {"rep": rep, "restart_s": round(time.monotonic() - t, 1),
               "pids": {f"{g.name}-{k}": self.pid(g.name, k) for g in self.groups.values()
                        for k in ("hp0", "hp1")}}  # fmt: skip
        self.generations.append(gen)
        self.log(f"HPs restarted before rep {rep} in {gen['restart_s']}s: {gen['pids']}")

    def pid(self, g: str, key: str) -> int:
        return int((self.groups[g].workers[key].built or {}).get("pid") or -1)

    # --------------------------------------------------------------------------------- evidence
    def registrations(self) -> None:
        """Which domain each fikit process registered in: fikitctl status --json, and top --json."""
        assert self.daemon is not None
        env = {
            **os.environ,
            **{k: v for k, v in self.daemon.env().items() if k.startswith("FIKIT_")},
            "PYTHONPATH": str(REPO),
        }
        outs: dict[str, Any] = {}
        for what, args in (("status", ["status", "--json"]), ("top", ["top", "--json", "--interval", "0.2"])):
            p = subprocess.run(
                [*self.fikitctl(), *args],
                env=env,
                cwd=str(REPO),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            with contextlib.suppress(json.JSONDecodeError):
                outs[what] = json.loads(p.stdout)
            (self.outdir() / f"{what}.json").write_text(p.stdout or p.stderr)
        by_pid = {self.pid("fikit", r.key): r for r in self.roles}
        clients = (outs.get("status") or {}).get("clients") or []
        self.registered = [
            {
                "role": by_pid[c["pid"]].key if c.get("pid") in by_pid else None,
                **{k: c.get(k) for k in ("gpu", "slot", "pid", "prio", "prio_requested", "job", "prog")},
            }
            for c in clients
        ]
        got = sorted((c["role"], c["gpu"]) for c in self.registered if c["role"])
        want = sorted((r.key, i) for r in self.roles for i in r.gpus)
        self.check(
            "each fikit process registered in the domain of each GPU it runs on (fikitctl status)",
            got == want,
            {"registered": self.registered, "expected": want},
        )
        lp2 = [c for c in self.registered if c["role"] == "lp2"]
        self.check(
            "the two-GPU job holds a slot in both domains, at low priority",
            sorted(c["gpu"] for c in lp2) == [0, 1] and all(c["slot"] >= 0 and c["prio"] == 2 for c in lp2),
            lp2,
        )
        tops = [[c.get("pid") for c in g.get("clients", [])] for g in (outs.get("top") or {}).get("gpus", [])]
        self.check(
            "fikitctl top shows every GPU with its clients",
            len(tops) == len(self.gpus) and all(tops),
            {"clients_by_gpu": tops},
        )
        mps = run_pairs.mps_clients(self.daemon.pipe, self.daemon.mps_log)
        if mps is None or self.fake:
            self.check("MPS clients", None, "no MPS server here (stand-in MPS)" if self.fake else "unknown")
        else:
            shared = [self.pid(g, r.key) for g in ("mpsprio", "fikit") for r in self.roles]
            plain = [self.pid("plain", r.key) for r in self.roles]
            self.check(
                "mps_prio and fikit processes are MPS clients, plain ones are not",
                all(p in mps for p in shared) and not any(p in mps for p in plain),
                {"mps_clients": sorted(mps), "shared": shared, "plain": plain},
            )
        jobs = (self.daemon.request({"op": "jobs"}) or {}).get("result", {}).get("jobs", [])
        self.job = next((j for j in jobs if str(j.get("name", "")).startswith("mg-lp2")), None)

    def held(self) -> dict[str, dict[int, dict[str, float] | None]]:
        """Each fikit process's counters in each GPU's domain (None: no slot there)."""
        assert self.daemon is not None
        for i in (0, 1):
            self.probes.setdefault(i, benchlib.FillProbe(self.daemon.rt / f"gpu{i}", self.lib))
        return {r.key: {i: self.probes[i].read(self.pid("fikit", r.key)) for i in (0, 1)} for r in self.roles}

    # --------------------------------------------------------------------------------- windows
    def window_cost(self) -> float:
        return self.a.window_s + self.a.discard_s + self.a.window_overhead_s

    def new_row(self, mode: str, rep: int, pos: int) -> dict[str, Any]:
        a = self.a
        return {
            "mode": mode,
            "rep": rep,
            "position": pos,
            "ts": benchlib.now_iso(),
            "window_s": a.window_s,
            "discard_s": a.discard_s,
            "ok": False,
            "error": None,
            "hp": {},
            "lp": {},
        }

    @contextlib.contextmanager
    def host_window(self, row: dict[str, Any]) -> Any:
        """What the host and the GPUs were doing meanwhile, into row: the HPs' and the service's
        cores (busy, stolen by the hypervisor), every core, how fast the canary ran, each GPU's
        clock; a window far off its neighbours says why here."""
        cores = {k: self.cpus[k] for k in ("hp0", "hp1", "service") if self.cpus.get(k)}
        cores["all"] = list(range(os.cpu_count() or 1))
        with contextlib.ExitStack() as stack:
            row["cpu"] = {k: stack.enter_context(benchlib.cpu_window(c)) for k, c in cores.items()}
            row["gpu_clock"] = {str(i): stack.enter_context(c.window()) for i, c in self.clocks.items()}
            canary = self.canary if self.canary and self.canary.alive() else None
            row["canary"] = stack.enter_context(canary.window()) if canary else {}
            yield

    def measure(self, row: dict[str, Any], recs: dict[str, list[list[float]]], spans: ctl.Spans) -> None:
        """A mode's figures from its workers' records inside its measured spans; row["ok"] says
        whether every HP served a request and every LP made progress there."""
        mode = row["mode"]
        group = self.groups[MODE_GROUP[mode]]
        lats: dict[str, list[float]] = {}
        for k in mode_keys(mode, self.roles):
            w = group.workers[k]
            if k.startswith("hp"):
                row["hp"][k] = ctl.hp_stats(recs[w.tag], spans)
                lats[k] = ctl.hp_latencies(recs[w.tag], spans)[0]
                if len(spans) > 1:  # slices: each one's p50, in turn, to see what follows what
                    row["hp"][k]["slice_p50_ms"] = [ctl.hp_stats(recs[w.tag], [sp])["p50_ms"] for sp in spans]
            else:
                row["lp"][k] = run_pairs.Runner.lp_row(w, recs[w.tag], spans)
        row["ok"] = all(s["n"] > 0 for s in row["hp"].values()) and all(s["its"] for s in row["lp"].values())
        if not row["ok"]:
            row["error"] = "empty window (no HP request or no LP progress measured)"
            return
        for k, lat in lats.items():  # the pooled view (ratios()); the row keeps them while short
            self.lat.setdefault((mode, k), []).extend(lat)
        row["lat_ms"] = {k: [round(x, 3) for x in lat] for k, lat in lats.items() if len(lat) <= LAT_ROW_MAX}

    def held_between(
        self, before: dict[str, dict[int, dict[str, float] | None]]
    ) -> dict[str, dict[str, dict[str, Any] | None]]:
        """Launches held in each domain since `before` (self.held()), per process."""
        after = self.held()
        return {
            k: {
                str(i): None
                if not (b := before[k][i]) or not (f := after[k][i])
                else {
                    "launches": int(f["launches"] - b["launches"]),
                    "held_launches": int(f["held_launches"] - b["held_launches"]),
                    "held_ms": round((f["held_ns"] - b["held_ns"]) / 1e6, 3),
                    "corun_launches": int(f.get("released_corun", 0) - b.get("released_corun", 0)),
                }
                for i in (0, 1)
            }
            for k in before
        }

    def run_mode(self, mode: str, rep: int, pos: int) -> list[dict[str, Any]]:
        """A mode's window: its row, and with --floor-toggle-ms a fikit_hp window's fikit_off row."""
        a = self.a
        row = self.new_row(mode, rep, pos)
        group = self.groups[MODE_GROUP[mode]]
        if group.error:
            row["error"] = group.error
            return [row]
        workers = [group.workers[k] for k in mode_keys(mode, self.roles)]
        before = self.held() if mode == "fikit" else None
        toggles = None
        if mode == "fikit_hp" and a.floor_toggle_ms > 0:
            toggles = {w.tag: (a.floor_toggle_ms, "library") for w in workers}
        dur = a.discard_s + a.window_s
        try:
            with self.host_window(row):
                start, recs = ctl.run_window(workers, f"{mode}-{rep}", dur, grace_s=a.window_grace_s,
                                             toggles=toggles)  # fmt: skip
        except ctl.WorkerError as e:
            row["error"] = str(e)[:3000]
            group.error = f"window {mode} rep {rep} failed: {e}"[:3000]
            return [row]
        if before is not None:
            row["held_in_window"] = self.held_between(before)
        # each process's CPU time, faults and switches over the window (with a toggle, both halves)
        row["usage"] = {k: group.workers[k].usage for k in mode_keys(mode, self.roles)}
        spans = [(start + a.discard_s, start + dur)]
        if toggles is None:
            self.measure(row, {w.tag: recs[w.tag] for w in workers}, spans)
            return [row]
        off = {**self.new_row(OFF, rep, pos + 1), **{k: row[k] for k in ("cpu", "gpu_clock", "canary")}}
        for r, state in ((row, 1), (off, 0)):  # a record's fourth field: the library on (1) or off
            r["toggle_ms"] = a.floor_toggle_ms
            self.measure(r, {w.tag: [x for x in recs[w.tag] if len(x) > 3 and x[3] == state]
                             for w in workers}, spans)  # fmt: skip
        return [row, off]

    def block_plan(self, rep: int) -> list[slices.Slice]:
        a = self.a
        cycles = slices.cycles_for(a.window_s, a.slice_s, a.slice_discard_s)
        return slices.plan(SLICE_ORDER, cycles, a.slice_s, rep)

    def run_block(self, rep: int) -> list[dict[str, Any]]:
        """The side-by-side modes of a repetition in interleaved slices (slices.py): one block in
        which every process runs only in its mode's turns. A row per mode, as run_mode's, its
        figures from all its turns; the host's figures are the block's."""
        a = self.a
        block = self.block_plan(rep)
        first = SLICE_ORDER if rep % 2 == 0 else SLICE_ORDER[::-1]
        rows = [self.new_row(m, rep, pos) for pos, m in enumerate(first)]
        spans = {m: slices.measured(block, m, a.slice_discard_s) for m in SLICE_ORDER}
        for row in rows:
            m = row["mode"]
            row.update(window_s=round(ctl.span_length(spans[m]), 3), discard_s=a.slice_discard_s,
                       slice_s=a.slice_s, slices=sum(1 for s in block if s.mode == m))  # fmt: skip
        failed = next((g.error for m in SLICE_ORDER if (g := self.groups[MODE_GROUP[m]]).error), None)
        if failed:
            for row in rows:
                row["error"] = failed
            return rows
        # each process's turns: those of every mode it belongs to (a fikit HP runs in fikit and fikit_hp)
        belongs: dict[str, tuple[ctl.WorkerProc, list[str]]] = {}
        for m in SLICE_ORDER:
            for k in mode_keys(m, self.roles):
                w = self.groups[MODE_GROUP[m]].workers[k]
                belongs.setdefault(w.tag, (w, []))[1].append(m)
        workers = [w for w, _ in belongs.values()]
        turns = {tag: slices.turns(block, modes) for tag, (_, modes) in belongs.items()}
        before = self.held()
        env: dict[str, Any] = {}
        dur = block[-1].end
        try:
            with self.host_window(env):
                start, recs = ctl.run_window(
                    workers, f"block-{rep}", dur, grace_s=a.window_grace_s, slices=turns
                )
        except ctl.WorkerError as e:
            for row in rows:
                row["error"] = str(e)[:3000]
            for m in SLICE_ORDER:
                self.groups[MODE_GROUP[m]].error = f"block rep {rep} failed: {e}"[:3000]
            return rows
        held = self.held_between(before)
        for row in rows:
            row.update(env)
            if row["mode"] == "fikit":
                row["held_in_window"] = held
            self.measure(row, recs, [(start + x, start + b) for x, b in spans[row["mode"]]])
        return rows

    def run_windows(self) -> None:
        need_tail = self.a.shutdown_margin_s
        every = self.a.hp_restart_every
        for rep in range(self.a.reps):
            extras = rep % self.a.extras_every == 0
            modes = order(rep, sliced=self.a.slice_s > 0, extras=extras)
            restart = every > 0 and rep > 0 and rep % every == 0
            last = self.generations[-1]["restart_s"] if self.generations else self.startup_s
            restart_s = last if restart else 0.0
            cost = sum(self.window_cost() for m in modes if m != BLOCK)
            if BLOCK in modes:
                cost += self.block_plan(rep)[-1].end + self.a.window_overhead_s
            if self.left() < cost + restart_s + need_tail:
                self.stop_reason = (
                    f"budget: rep {rep} would not fit ({self.elapsed():.0f}s of {self.a.budget_s:.0f}s)"
                )
                self.log(self.stop_reason)
                return
            if restart:
                self.restart_hps(rep)
            pos = 0
            for mode in modes:
                rows = self.run_block(rep) if mode == BLOCK else self.run_mode(mode, rep, pos)
                pos += len(rows)
                for row in rows:
                    row["generation"] = len(self.generations)
                    self.rows.append(row)
                    benchlib.append_jsonl(self.outdir() / "raw.jsonl", row)
                    self.log_row(row)

    def compared(self) -> list[str]:
        """The modes whose HP is taken over solo_hp's: COMPARED, and fikit_off when the floor is toggled."""
        return [*COMPARED, OFF] if self.a.floor_toggle_ms > 0 else COMPARED

    def log_row(self, row: dict[str, Any]) -> None:
        hs = " ".join(f"{k} p50 {s.get('p50_ms')} p99 {s.get('p99_ms')}" for k, s in row["hp"].items())
        ls = " ".join(f"{k} {s.get('its')} it/s" for k, s in row["lp"].items())
        held = {
            k: {i: (v or {}).get("held_launches") for i, v in d.items()}
            for k, d in (row.get("held_in_window") or {}).items()
        }
        cpu, clk = row.get("cpu", {}), row.get("gpu_clock", {})
        rate = row.get("canary", {}).get("rate")
        env = " ".join(
            [f"{k} busy {v.get('busy_pct')}% steal {v.get('steal_pct')}%" for k, v in cpu.items()]
            + [f"gpu{i} {v.get('sm_mhz_mean')} MHz" for i, v in clk.items()]
            + ([f"canary {rate}/s"] if rate else [])
        )
        self.log(
            f"rep{row['rep']} {row['mode']:9} {hs} | {ls}"
            f"{' | held ' + json.dumps(held) if held else ''} | {env}"
            f"{'' if row['ok'] else ' | ERROR ' + str(row['error'])[:200]}"
        )

    # --------------------------------------------------------------------------------- summary
    def ratios(self) -> dict[str, Any]:
        """Per repetition against the same repetition's solo windows; medians and spreads."""
        by: dict[tuple[str, int], dict[str, Any]] = {(r["mode"], r["rep"]): r for r in self.rows if r["ok"]}
        reps = sorted({r for _, r in by})
        per: dict[str, dict[str, list[float | None]]] = {}

        def add(name: str, mode: str, v: float | None) -> None:
            per.setdefault(name, {}).setdefault(mode, []).append(v)

        for rep in reps:
            sh, sl, sl2 = by.get(("solo_hp", rep)), by.get(("solo_lp", rep)), by.get(("solo_lp2", rep))
            mp, floor = by.get(("mps_prio", rep)), by.get(("fikit_hp", rep))
            mps_floor, off = by.get(("mps_hp", rep)), by.get((OFF, rep))
            for mode in self.compared():
                row = by.get((mode, rep))
                if row is None:
                    continue
                for k in ("hp0", "hp1"):
                    for q in ("p50", "p99"):
                        ms = row["hp"][k][f"{q}_ms"]
                        if sh and k in sh["hp"]:
                            add(f"{k}_{q}_ratio", mode, benchlib.ratio(ms, sh["hp"][k][f"{q}_ms"]))
                        if mode == "fikit" and floor and k in floor["hp"]:
                            add(f"{k}_{q}_vs_fikit_hp", mode, benchlib.ratio(ms, floor["hp"][k][f"{q}_ms"]))
                        if mode in ("fikit_hp", OFF) and mps_floor and k in mps_floor["hp"]:
                            # the floor's own split: the library and fikitd over MPS alone (fikit_off:
                            # the same process with the library off, over MPS alone)
                            add(f"{k}_{q}_vs_mps_hp", mode, benchlib.ratio(ms, mps_floor["hp"][k][f"{q}_ms"]))
                        if mode == "fikit_hp" and off and k in off["hp"]:
                            # the library's launches, on over off inside the same process and window
                            add(f"{k}_{q}_vs_fikit_off", mode, benchlib.ratio(ms, off["hp"][k][f"{q}_ms"]))
                if mode not in SHARED:
                    continue
                for k, solo in (("lp0", sl), ("lp1", sl), ("lp2", sl2)):
                    its = row["lp"][k]["its"]
                    if solo and k in solo["lp"]:
                        add(f"{k}_tput_ratio", mode, benchlib.ratio(its, solo["lp"][k]["its"]))
                    if mode == "fikit" and mp:
                        add(f"{k}_vs_mps_prio", mode, benchlib.ratio(its, mp["lp"][k]["its"]))
        out: dict[str, Any] = {}
        for name, modes in per.items():
            out[name] = {
                m: {"median": benchlib.rnd(benchlib.median(v)), "spread": benchlib.spread(v), "n": len(v)}
                for m, v in modes.items()
            }
        # The second view: every request of a mode's ok windows pooled, its quantile over solo_hp's
        # (n: requests). Longer windows weigh more; a slow stretch of the host moves it as much.
        for k in ("hp0", "hp1"):
            solo = self.lat.get(("solo_hp", k)) or []
            for q, at in (("p50", 0.5), ("p99", 0.99)):
                den = benchlib.quantile(solo, at)
                out[f"{k}_{q}_pooled_ratio"] = {
                    m: {"ratio": benchlib.rnd(benchlib.ratio(benchlib.quantile(lat, at), den)), "n": len(lat)}
                    for m in self.compared()
                    if (lat := self.lat.get((m, k)))
                }
        return out

    def usage(self) -> dict[str, Any]:
        """Where each HP's time went, per mode: medians over its windows of the CPU time a request
        took (the whole process's, and its serving thread's), the page faults and the switches.
        Two modes whose requests take different times but the same CPU lost it waiting (on the
        GPU, or for a CPU); more CPU a request is work done in the process (fikit_hp's windows
        with --floor-toggle-ms count both halves)."""
        out: dict[str, Any] = {}
        for k in ("hp0", "hp1"):
            per: dict[str, Any] = {}
            for m in ("solo_hp", *COMPARED):
                us = [u for r in self.rows if r["mode"] == m and r["ok"]
                      for u in [(r.get("usage") or {}).get(k) or {}] if u.get("n")]  # fmt: skip
                per[m] = {
                    "windows": len(us),
                    "cpu_ms_per_request": per_unit(us, "proc_cpu_s", "n", 1e3),
                    "thread_cpu_ms_per_request": per_unit(us, "thread_cpu_s", "n", 1e3),
                    "minflt_per_request": per_unit(us, "proc_minflt", "n"),
                    "nvcsw_per_request": per_unit(us, "proc_nvcsw", "n"),
                    "nivcsw_per_s": per_unit(us, "proc_nivcsw", "wall_s"),
                }
            out[k] = per
        return out

    def noise(self) -> dict[str, Any]:
        """What the host's CPU speed explains of the HPs' window-to-window spread: per HP and mode,
        Pearson's r across that mode's ok windows between log(HP p50) and log(1/canary rate) (near
        1: the HP was slow where the host ran code slowly); `all` pools the modes, each centred on
        its own mean. And the canary's rates: their spread, and their median per mode (a mode that
        slows the host's CPUs shows there)."""
        rows = [r for r in self.rows if r["ok"] and (r.get("canary") or {}).get("rate")]
        rates = [float(r["canary"]["rate"]) for r in rows]
        c = self.canary
        out: dict[str, Any] = {
            "canary": {
                "cpu": c.cpu if c else None,
                "error": c.error if c else "not started",
                "unit_iters": benchlib.CANARY_UNIT,
                "windows": len(rates),
                "rate_min": min(rates, default=None),
                "rate_median": benchlib.rnd(benchlib.median(rates), 1),
                "rate_max": max(rates, default=None),
                "rate_median_by_mode": {
                    m: benchlib.rnd(benchlib.median(r["canary"]["rate"] for r in rows if r["mode"] == m), 1)
                    for m in MODES
                },
            }
        }
        for k in ("hp0", "hp1"):
            per: dict[str, Any] = {}
            xs_all: list[float] = []
            ys_all: list[float] = []
            for m in ("solo_hp", *COMPARED):
                pts = [(math.log(p), -math.log(r["canary"]["rate"])) for r in rows if r["mode"] == m
                       for p in [(r["hp"].get(k) or {}).get("p50_ms")] if p]  # fmt: skip
                xs, ys = [x for x, _ in pts], [y for _, y in pts]
                per[m] = {"r": benchlib.rnd(benchlib.pearson(xs, ys), 3), "n": len(pts)}
                if pts:
                    xs_all += [x - sum(xs) / len(xs) for x in xs]
                    ys_all += [y - sum(ys) / len(ys) for y in ys]
            per["all"] = {"r": benchlib.rnd(benchlib.pearson(xs_all, ys_all), 3), "n": len(xs_all)}
            out[k] = per
        return out

    def per_gpu(self, ratios: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for i, gpu in enumerate(self.gpus):
            hp = next(r for r in self.roles if r.role == "hp" and r.gpus == [i])
            lp = next(r for r in self.roles if r.role == "lp" and r.gpus == [i])

            def of(name: str, mode: str, key: str = hp.key) -> Any:
                return (ratios.get(f"{key}_{name}") or {}).get(mode)

            fik50, fik99 = ((of(f"{q}_ratio", "fikit") or {}).get("median") for q in ("p50", "p99"))
            missed = []
            if fik50 is None or fik50 > summarize.TARGET_HP_P50:
                missed.append(f"HP p50 {fik50} x solo (target <= {summarize.TARGET_HP_P50})")
            if fik99 is None or fik99 > summarize.TARGET_HP_P99:
                missed.append(f"HP p99 {fik99} x solo (target <= {summarize.TARGET_HP_P99})")
            held = [r.get("held_in_window") or {} for r in self.rows if r["mode"] == "fikit" and r["ok"]]
            out.append(
                {
                    **gpu,
                    "hp": hp.model,
                    "lp": lp.model,
                    "two_gpu_lp": self.a.lp2,
                    "hp_p50_ratio": {m: of("p50_ratio", m) for m in self.compared()},
                    "hp_p99_ratio": {m: of("p99_ratio", m) for m in self.compared()},
                    # the second view: all requests pooled (the targets stay on the medians above)
                    "hp_p50_pooled_ratio": ratios.get(f"{hp.key}_p50_pooled_ratio") or {},
                    "hp_p99_pooled_ratio": ratios.get(f"{hp.key}_p99_pooled_ratio") or {},
                    # fikit's HP over the same HP with its LPs idle: the scheduling's own cost
                    "hp_p50_vs_fikit_hp": of("p50_vs_fikit_hp", "fikit"),
                    "hp_p99_vs_fikit_hp": of("p99_vs_fikit_hp", "fikit"),
                    # that floor split: MPS alone is mps_hp over solo; the library and fikitd this
                    "floor_p50_vs_mps_hp": of("p50_vs_mps_hp", "fikit_hp"),
                    "floor_p99_vs_mps_hp": of("p99_vs_mps_hp", "fikit_hp"),
                    # with --floor-toggle-ms, that split again: the library's launches inside the
                    # process (fikit_hp over fikit_off), and the rest (fikit_off over mps_hp)
                    "floor_p50_library_inproc": of("p50_vs_fikit_off", "fikit_hp"),
                    "floor_p50_rest_vs_mps_hp": of("p50_vs_mps_hp", OFF),
                    "lp_tput_ratio": {m: (ratios.get(f"{lp.key}_tput_ratio") or {}).get(m) for m in SHARED},
                    "lp_vs_mps_prio": (ratios.get(f"{lp.key}_vs_mps_prio") or {}).get("fikit"),
                    "targets": {
                        "hp_p50_ratio": summarize.TARGET_HP_P50,
                        "hp_p99_ratio": summarize.TARGET_HP_P99,
                    },
                    "targets_met": not missed,
                    "targets_missed": missed,
                    "registered": [c for c in self.registered if c.get("gpu") == i],
                    "held_launches_in_fikit_windows": {
                        k: sum(((h.get(k) or {}).get(str(i)) or {}).get("held_launches", 0) for h in held)
                        for r in self.roles
                        for k in [r.key]
                        if i in r.gpus
                    },
                }
            )
        return out

    def final_checks(self, per_gpu: list[dict[str, Any]]) -> None:
        fik = [r for r in self.rows if r["mode"] == "fikit" and r["ok"]]
        if not fik:
            self.check("fikit windows measured", False, self.stop_reason or "no fikit window ran")
            return
        # The domain of each GPU decided the two-GPU job's launches there: held them, or (fikitd's
        # default co-running share) sent them to run beside that GPU's busy HP on a green context.
        def decided(i: int, what: str) -> int:
            return sum(((r["held_in_window"].get("lp2") or {}).get(str(i)) or {}).get(what, 0) for r in fik)

        lp2 = {i: {"held": decided(i, "held_launches"), "corun": decided(i, "corun_launches")}
               for i in (0, 1)}
        hp = {
            k: sum(
                ((r["held_in_window"].get(k) or {}).get(str(i)) or {}).get("held_launches", 0)
                for r in fik
                for i in (0, 1)
            )
            for k in ("hp0", "hp1")
        }
        self.check(
            "the two-GPU job was held or sent to co-run in each domain (by that GPU's HP), the HPs never",
            all(v["held"] + v["corun"] > 0 for v in lp2.values()) and not any(hp.values()),
            {"lp2_by_gpu": lp2, "hp_held": hp},
        )
        stats = run_pairs.read_stats(self.outdir() / "stats", STATS_KEY, "fikit-lp2-" + self.a.lp2) or []
        doms = [d for s in stats for d in s.get("domains", [])]
        self.check(
            "at exit, the two-GPU job's FIKIT_STATS lists both domains with a slot each",
            sorted(d.get("gpu") for d in doms) == [0, 1] and all(d.get("slot", -1) >= 0 for d in doms),
            doms,
        )
        self.quiet_check(per_gpu)
        for g in per_gpu:
            ok = g["targets_met"] if not self.fake else None
            ev = {
                "hp_p50_ratio": g["hp_p50_ratio"]["fikit"],
                "hp_p99_ratio": g["hp_p99_ratio"]["fikit"],
                "missed": g["targets_missed"],
            }
            if self.fake:
                ev["note"] = "fake driver on a CPU: timing rehearsed, not measured"
            self.check(
                f"GPU {g['index']}: fikit keeps its HP ({g['hp']}) within the single-GPU targets", ok, ev
            )

    def quiet_check(self, per_gpu: list[dict[str, Any]]) -> None:
        """Quiet launches (interpose/src/quiet.c, fikitd's default quiet_stride) in each fikit HP
        process: the share of its launches only counted, from the FIKIT_STATS it wrote at exit.
        Most of a torch HP's launches should be (run 27: 71-93%); the fake models' requests are
        too short for any to be."""
        shares: dict[str, list[float]] = {}
        for g in per_gpu:
            role = f"hp{g['index']}"
            stats = run_pairs.read_stats(self.outdir() / "stats", STATS_KEY, f"fikit-{role}-{g['hp']}") or []
            shares[role] = [
                round(d["quiet"]["quiet_launches"] / d["launches"], 3)
                for s in stats for d in s.get("domains", [])
                if d.get("launches") and isinstance(d.get("quiet"), dict)
            ]
        ok = None if self.fake else mostly_quiet(shares)
        ev: dict[str, Any] = {"quiet_share_by_process": shares}
        if self.fake:
            ev["note"] = "fake driver: requests too short to go quiet"
        self.check("most of each fikit HP's launches were quiet (only counted)", ok, ev)

    @staticmethod
    def table(per_gpu: list[dict[str, Any]], lp2: dict[str, Any], noise: dict[str, Any]) -> list[str]:
        """The summary in a few lines: medians over repetitions (fikit / mps_prio), pooled, noise."""

        def m(d: dict[str, Any] | None, key: str = "median") -> str:
            return "-" if not d or d.get(key) is None else f"{d[key]:.3f}"

        out = []
        for g in per_gpu:
            p50, p99, lp = g["hp_p50_ratio"], g["hp_p99_ratio"], g["lp_tput_ratio"]
            targets = "met" if g["targets_met"] else "missed: " + "; ".join(g["targets_missed"])
            out.append(
                f"GPU {g['index']} {g['hp']}+{g['lp']}: HP p50 x solo {m(p50['fikit'])} fikit / "
                f"{m(p50['mps_prio'])} mps_prio, p99 {m(p99['fikit'])} / {m(p99['mps_prio'])}; "
                f"LP x solo {m(lp['fikit'])} / {m(lp['mps_prio'])}, "
                f"LP fikit/mps_prio {m(g['lp_vs_mps_prio'])}; HP alone under fikit (LPs idle) p50 x solo "
                f"{m(p50.get('fikit_hp'))}, p99 {m(p99.get('fikit_hp'))}; fikit HP over that p50 "
                f"{m(g['hp_p50_vs_fikit_hp'])}, p99 {m(g['hp_p99_vs_fikit_hp'])}; HP alone under MPS p50 "
                f"x solo {m(p50.get('mps_hp'))}, library and fikitd over that {m(g['floor_p50_vs_mps_hp'])}"
                + ("" if g["floor_p50_library_inproc"] is None else
                   f" (its launches, in-process {m(g['floor_p50_library_inproc'])}; the rest, library off "
                   f"over MPS alone {m(g['floor_p50_rest_vs_mps_hp'])})")
                + f"; targets {targets}"
            )
            shown = list(g["hp_p50_ratio"])[::-1]
            pooled = {q: " / ".join(m(g[f"hp_{q}_pooled_ratio"].get(x), "ratio") for x in shown)
                      for q in ("p50", "p99")}  # fmt: skip
            out.append(
                f"GPU {g['index']} all requests pooled, HP x solo ({' / '.join(shown)}): "
                f"p50 {pooled['p50']}, p99 {pooled['p99']}"
            )
        t = lp2.get("tput_ratio") or {}
        doms = [c.get("gpu") for c in lp2.get("registered", [])]
        out.append(
            f"two-GPU job: x solo {m(t.get('fikit'))} fikit / {m(t.get('mps_prio'))} mps_prio, "
            f"fikit/mps_prio {m(lp2.get('vs_mps_prio'))}; domains {doms}"
        )
        c = noise["canary"]
        corr = "; ".join(
            f"{k} " + " ".join(f"{mode} {m(v, 'r')}" for mode, v in noise[k].items()) for k in ("hp0", "hp1")
        )
        out.append(
            f"noise: canary {c['rate_min']}/{c['rate_median']}/{c['rate_max']} units/s (min/median/max, "
            f"{c['windows']} windows{', ' + str(c['error']) if c['error'] else ''}); "
            f"r(log HP p50, log 1/canary rate): {corr}"
        )
        return out

    def outdir(self) -> Path:
        assert self.out is not None
        return self.out

    def write_summary(self, info: dict[str, Any]) -> None:
        ratios = self.ratios()
        per_gpu = self.per_gpu(ratios)
        noise = self.noise()
        usage = self.usage()
        self.final_checks(per_gpu)
        sliced = self.a.slice_s > 0
        summary = {
            "what": "issue 8: a scheduling domain per GPU; two HP/LP pairs and one two-GPU LP job at once",
            "date": info["date"],
            "gpus": [{k: g[k] for k in ("index", "name", "uuid")} for g in self.gpus],
            "driver": info["driver"],
            "commit": os.environ.get("FIKIT_COMMIT") or info["commit"],
            "fake": self.fake,
            "lib": self.lib,
            "setup": {
                r.key: {"model": r.model, "gpus": r.gpus, "prio": r.prio, "batch": r.batch}
                for r in self.roles
            },
            "scheduler": "fikitd defaults (fikitd/config.py SchedulerConfig): fikit mode, gap filling",
            "modes": MODES,
            "order": {"even_reps": order(0, sliced), "odd_reps": order(1, sliced)},
            "extras_every": self.a.extras_every,
            "floor_toggle_ms": self.a.floor_toggle_ms,
            "slicing": None if not sliced else {
                "slice_s": self.a.slice_s, "discard_s": self.a.slice_discard_s,
                "cycles": slices.cycles_for(self.a.window_s, self.a.slice_s, self.a.slice_discard_s),
                "even_reps": [x.mode for x in self.block_plan(0)],
            },
            "cpu_plan": self.cpu_plan.get("cpus", {}),
            "topology": self.cpu_plan.get("topology", {}),
            "cpu_plan_notes": self.cpu_plan.get("notes", []),
            "harness_threads_pinned": self.cpu_plan.get("harness_threads_pinned"),
            # each worker's CPUs and how many of its threads it pinned there (worker.py's `built`)
            "workers_pinned": {
                w.tag: {k: (w.built or {}).get(k) for k in ("pinned", "pinned_threads")}
                for w in self.all_workers()
            },
            "reps_done": len({r["rep"] for r in self.rows if r["mode"] == "fikit" and r["ok"]}),
            "window_s": self.a.window_s,
            "startup_s": self.startup_s,
            "hp_restart_every": self.a.hp_restart_every,
            "hp_generations": self.generations,
            "stop_reason": self.stop_reason,
            "per_gpu": per_gpu,
            "two_gpu_job": {
                "job": {
                    k: (self.job or {}).get(k) for k in ("id", "name", "gpu", "state", "exit_code", "prio")
                },
                "registered": [c for c in self.registered if c.get("role") == "lp2"],
                "tput_ratio": ratios.get("lp2_tput_ratio"),
                "vs_mps_prio": (ratios.get("lp2_vs_mps_prio") or {}).get("fikit"),
                "fikit_stats": run_pairs.read_stats(
                    self.outdir() / "stats", STATS_KEY, "fikit-lp2-" + self.a.lp2
                ),
            },
            "ratios": ratios,
            "usage": usage,
            "noise": noise,
            "checks": self.checks,
            "ok": all(c["ok"] is not False for c in self.checks),
            "wall_s": round(self.elapsed(), 1),
        }
        benchlib.write_json(self.outdir() / "summary.json", summary)
        for line in self.table(per_gpu, summary["two_gpu_job"], noise):
            self.log(line)
        for k, per in usage.items():
            self.log(f"usage {k}, CPU ms a request (its thread's): " + ", ".join(
                f"{m} {u['cpu_ms_per_request']} ({u['thread_cpu_ms_per_request']})" for m, u in per.items()))
        failed = [c["check"] for c in self.checks if c["ok"] is False]
        self.log(
            f"verify_multigpu: {'ALL PASS' if not failed else 'FAILED: ' + '; '.join(failed)} "
            f"-> {self.outdir() / 'summary.json'}"
        )

    # --------------------------------------------------------------------------------- run
    def teardown(self) -> None:
        ctl.stop_all(self.all_workers())
        if self.canary is not None:
            self.canary.stop()
        if self.daemon is None:
            return
        # a two-GPU job still running (its worker hung) must not outlive the run: fikitd leaves jobs
        with contextlib.suppress(Exception):
            for j in (self.daemon.request({"op": "jobs"}) or {}).get("result", {}).get("jobs", []):
                if j.get("state") in ("queued", "running"):
                    self.daemon.request({"op": "cancel", "job": j["id"]})
        if self.job:
            with contextlib.suppress(Exception):
                shown = (self.daemon.request({"op": "show", "job": self.job["id"]}) or {}).get("result", {})
                self.job = shown.get("job") or self.job
                res = self.daemon.request({"op": "logs", "job": self.job["id"], "max": 20000}) or {}
                log = str(res.get("result", {}).get("data", ""))
                (self.outdir() / "logs" / "fikit-lp2-job.log").write_text(log)
            job = self.job or {}
            self.check(
                "the two-GPU job (fikitctl submit --wait) ended done, exit 0",
                job.get("state") == "done" and job.get("exit_code") == 0,
                {k: job.get(k) for k in ("id", "gpu", "state", "exit_code", "reason")},
            )
        self.daemon.stop()
        with contextlib.suppress(OSError):
            shutil.copy(self.daemon.log_path, self.outdir() / "fikitd.log")

    def run(self) -> int:
        self.find_gpus()
        if self.out is None:
            self.out = self.default_out()
        self.outdir().mkdir(parents=True, exist_ok=True)
        for stale in ("raw.jsonl", "summary.json"):
            (self.outdir() / stale).unlink(missing_ok=True)
        shutil.rmtree(self.outdir() / "stats", ignore_errors=True)
        (self.outdir() / "stats").mkdir()
        if self.fake:
            self.prepare_fake()
        info = {
            "date": benchlib.now_iso(),
            "driver": benchlib.nvidia_smi_query()["driver"],
            "commit": benchlib.git_commit(),
        }
        self.log(
            f"verify_multigpu: out={self.outdir()} gpus={self.gpus} lib={self.lib} budget={self.a.budget_s}s"
        )
        finished = False
        try:
            if self.lib is None:
                self.check("libfikit.so found", False, "pass --lib (or build it: cmake --build build/gpu)")
            elif len(self.gpus) < 2:
                self.check("two GPUs", False, {"gpus": self.gpus})
            else:
                self.plan_cpus()  # first: what the harness starts from here on inherits its CPUs
                self.start_canary()
                if self.start_daemon():
                    self.start_workers()
                    if not self.groups["fikit"].error:
                        self.registrations()
                    self.run_windows()
            finished = True
        except Exception as e:
            finished = True
            self.check("verify_multigpu ran to the end", False, repr(e)[:2000])
        finally:
            if not finished:
                self.check("verify_multigpu ran to the end", False, "interrupted (SIGTERM: the time limit?)")
            try:
                self.teardown()
            finally:
                shutil.rmtree(self.base, ignore_errors=True)
                self.write_summary(info)
        return 0 if all(c["ok"] is not False for c in self.checks) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="result folder (default bench/results/<date>-<n>x<gpu>)")
    p.add_argument("--lib", default=None, help="libfikit.so (default: $FIKIT_LIB or a build/ folder)")
    p.add_argument("--fake", action="store_true", help="CPU rehearsal: build tests/fakecuda, 2 fake GPUs")
    p.add_argument("--fake-cuda-dir", default=None, help="CPU rehearsal with a built fake libcuda.so.1")
    p.add_argument("--hp0", default="bert")
    p.add_argument("--lp0", default="vgg16_infer")
    p.add_argument("--hp1", default="resnet50")
    p.add_argument("--lp1", default="resnet50_train")
    p.add_argument("--lp2", default="resnet50_train", help="the two-GPU LP job's model (one copy a GPU)")
    p.add_argument("--lp2-batch", type=int, default=32, help="its batch on each GPU")
    p.add_argument(
        "--reps", type=int, default=5, help="interleaved repetitions (as many as --budget-s allows)"
    )
    p.add_argument("--window-s", type=float, default=2.5)
    p.add_argument("--discard-s", type=float, default=0.5)
    p.add_argument("--window-overhead-s", type=float, default=0.8, help="planning: extra seconds per window")
    p.add_argument("--warmup-s", type=float, default=1.5)
    p.add_argument("--window-grace-s", type=float, default=20.0)
    p.add_argument("--budget-s", type=float, default=300.0, help="deadline: no window starts past what fits")
    p.add_argument("--shutdown-margin-s", type=float, default=30.0, help="kept for teardown and the summary")
    p.add_argument("--ready-timeout-s", type=float, default=60.0)
    p.add_argument("--startup-timeout-s", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hp-restart-every", type=int, default=0,
                   help="start every HP process anew before each N-th repetition (0: never)")
    p.add_argument("--slice-s", type=float, default=0.0,
                   help="run the side-by-side modes in interleaved slices of this length (0: in windows)")
    p.add_argument("--slice-discard-s", type=float, default=0.1,
                   help="with --slice-s: the unmeasured start of each slice")
    p.add_argument("--extras-every", type=int, default=1,
                   help="run mps_prio, solo_lp and solo_lp2 in every N-th repetition only (LP figures)")
    p.add_argument("--floor-toggle-ms", type=float, default=0.0,
                   help="in fikit_hp windows, the fikit HPs' library off and on every N ms: a fikit_off row "
                        "(0: never)")
    # CPUs: `auto` plans them from /sys (benchlib.plan_cores); a list (e.g. 2-3,18) overrides a role
    for k in CPU_ROLES:
        p.add_argument(f"--{k}-cores", default="auto", help=f"{k}'s CPUs (default auto)")
    p.add_argument("--hp-phys-cores", type=int, default=2, help="auto: an HP's cores (a thread of each)")
    p.add_argument("--canary-cpu", default="auto", help="the CPU-speed canary's CPU: auto, none or a CPU")
    a = p.parse_args(argv)
    if a.extras_every < 1:
        p.error(f"--extras-every must be 1 or more (got {a.extras_every})")
    if a.floor_toggle_ms < 0 or (a.floor_toggle_ms and a.slice_s):
        p.error("--floor-toggle-ms takes a positive N, in windows (not with --slice-s)")
    if a.slice_s:
        try:
            slices.cycles_for(a.window_s, a.slice_s, a.slice_discard_s)
        except ValueError as e:
            p.error(str(e))
    # `timeout` sends SIGTERM: unwind through run()'s finally (workers, jobs, fikitd and MPS stopped)
    signal.signal(signal.SIGTERM, _terminate)
    return Verify(a).run()


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: `timeout` then signals the whole group
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
