#!/usr/bin/env python3
"""Issue 11: which mechanism keeps HP's short kernels fast beside an LP's long ones, at what LP cost.

bench/corun_mech.cu's two roles run as clients of a private MPS control daemon: an HP (batch-1
inference: requests of 40 short kernels with host work between them) and an LP (long streaming
kernels back to back). Each *variant* puts the LP's work somewhere else: plain MPS, MPS client
priority, an MPS thread-percentage cap, an MPS execution-affinity context of N SMs, a green-context
stream of N SMs, stream priorities (the least priority is the default one: `streamprio` raises the
HP's stream rather than lowering the LP's), or a combination. Per repetition every variant runs once, in an
order rotated by the repetition (drift then spreads over all variants), with the two baselines
`hp_alone` and `lp_alone` of the same repetition:

  1. start the LP; wait for its "ready" line (its first kernels have run, timed alone);
  2. run the HP for --warmup-s + --window-s; it reports its request latencies and its window's
     CLOCK_MONOTONIC bounds;
  3. SIGTERM the LP; it prints its kernel completion times, of which those inside the HP's window
     give the LP's throughput while the HP ran (not while the HP started up).

Rows go to OUT/mech.jsonl as they are made (a killed run keeps them; run again, it skips the rows
without errors already there). OUT/mech.json: per variant the medians over repetitions of the HP
p50/p99 against `hp_alone`, the LP throughput against `mps` and against `lp_alone` (each against
the same repetition's baseline), with [min, max] spreads.

    python3 bench/corun_mech.py --out bench/results/DATE-h100-mech --reps 3 --window-s 2 --budget-s 220
    python3 bench/corun_mech.py --dry-run --out /tmp/mech --window-s 0.2 --warmup-s 0.05  # no GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib

SRC = benchlib.BENCH_DIR / "corun_mech.cu"
PRIO1 = (("CUDA_MPS_CLIENT_PRIORITY", "1"),)
# Set for the affinity variants: some MPS versions want this opt-in before a client may give a
# context its own SM share; it changes nothing for a client that makes no such context.
PER_CTX = (("CUDA_MPS_ENABLE_PER_CTX_DEVICE_MULTIPROCESSOR_PARTITIONING", "1"),)
HI, LO = ("--stream-prio", "hi"), ("--stream-prio", "lo")


@dataclass(frozen=True)
class Variant:
    """Where the LP's kernels go (and, for stream priorities, the HP's): arguments and environment."""

    name: str
    hp: bool = True
    lp: bool = True
    lp_args: tuple[str, ...] = ()
    hp_args: tuple[str, ...] = ()
    lp_env: tuple[tuple[str, str], ...] = ()
    dry_hp: float = 1.0  # dry-run only: the stand-in HP's p50 as a multiple of hp_alone's
    dry_lp: float = 1.0  # dry-run only: the stand-in LP's throughput as a multiple of mps's


VARIANTS = [
    Variant("hp_alone", lp=False),
    Variant("lp_alone", hp=False, dry_lp=1.1),
    Variant("mps", dry_hp=3.0),
    Variant("mps_prio", lp_env=PRIO1, dry_hp=1.4, dry_lp=0.95),
    Variant("smcap50", lp_env=(*PRIO1, ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "50")), dry_hp=1.2, dry_lp=0.8),
    Variant("smcap25", lp_env=(*PRIO1, ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "25")), dry_hp=1.1, dry_lp=0.5),
    Variant("affinity66", lp_args=("--affinity", "66"), lp_env=PRIO1 + PER_CTX, dry_hp=1.1, dry_lp=0.8),
    Variant("affinity33", lp_args=("--affinity", "33"), lp_env=PRIO1 + PER_CTX, dry_hp=1.05, dry_lp=0.5),
    Variant("green66", lp_args=("--green", "66"), lp_env=PRIO1, dry_hp=1.1, dry_lp=0.75),
    Variant("green33", lp_args=("--green", "33"), lp_env=PRIO1, dry_hp=1.05, dry_lp=0.45),
    Variant("streamprio", lp_args=LO, hp_args=HI, dry_hp=2.0),
    Variant("streamprio_mps_prio", lp_args=LO, hp_args=HI, lp_env=PRIO1, dry_hp=1.3, dry_lp=0.95),
    Variant("affinity33_streamprio", lp_args=("--affinity", "33", *LO), hp_args=HI, lp_env=PRIO1 + PER_CTX,
            dry_hp=1.04, dry_lp=0.5),
]  # fmt: skip
BY_NAME = {v.name: v for v in VARIANTS}
# Medians of the rows' own values; the kernel times say whether the kernels are as long as intended.
RAW_KEYS = ("hp_p50_us", "hp_p99_us", "lp_kernels_per_s", "lp_kernel_us", "hp_kernel_ev_us")
PARAMS = ("reps", "window_s", "warmup_s", "budget_s", "hp_cpus", "lp_cpus")

# Dry-run stand-in for the binary: same argv, same JSON shapes, made-up numbers chosen by the driver
# (DRY_HP_US, DRY_LP_KPS), every line marked "dry_run"; DRY_FAIL makes it fail as a context would.
STANDIN = r"""
import json, os, signal, sys, time
role, o = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
aff, green = int(o.get("--affinity", 0)), int(o.get("--green", 0))
info = {"role": role, "dry_run": True, "sms": 132, "affinity": aff, "affinity_supported": 1,
        "affinity_sms": aff or -1, "ctx_adopted": True if aff else None, "green": green,
        "green_sms": green or -1,
        "stream_prio": o.get("--stream-prio", "none"), "mps": False,
        "mps_client_priority": os.environ.get("CUDA_MPS_CLIENT_PRIORITY", ""),
        "active_thread_pct": os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "")}
if os.environ.get("DRY_FAIL"):
    print(json.dumps({"error": "CUDA_ERROR_NOT_SUPPORTED", "code": 801, "at": "cuCtxCreate(dry-run)"}))
    sys.exit(1)
if role == "hp":
    time.sleep(float(o.get("--warmup", 0.3)))
    t0 = time.monotonic_ns()
    time.sleep(float(o.get("--seconds", 2)))
    us = float(os.environ["DRY_HP_US"])
    print(json.dumps({**info, "n": 1000, "p50_us": us, "p90_us": us * 1.2, "p99_us": us * 1.5,
                      "mean_us": us * 1.05, "max_us": us * 2, "kernel_ev_us_p50": 10.0,
                      "kernel_ev_us_min": 9.5, "win_ns": [t0, time.monotonic_ns()]}))
    sys.exit(0)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
kps = float(os.environ["DRY_LP_KPS"])
print(json.dumps({"ready": True, **info, "kernel_us": 1e6 / kps}), flush=True)
t0 = time.monotonic_ns()
end = t0 + float(o.get("--seconds", 60)) * 1e9
while not stop and time.monotonic_ns() < end:
    time.sleep(0.005)
t1 = time.monotonic_ns()
done = list(range(t0, t1, int(1e9 / kps)))
print(json.dumps({**info, "kernels": len(done), "seconds": (t1 - t0) / 1e9, "kernel_us": 1e6 / kps,
                  "kernels_per_s": len(done) / ((t1 - t0) / 1e9), "done_ns": done}), flush=True)
"""
DRY_HP_US, DRY_LP_KPS = 450.0, 1800.0


class Child:
    """A role process whose stdout (stderr merged) a thread reads, so that every wait can time out."""

    def __init__(self, argv: list[str], env: dict[str, str], cpus: list[int]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.other: list[str] = []  # lines that are not JSON: the driver's and MPS's complaints
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  preexec_fn=benchlib.pin_preexec(cpus))  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_json(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object it prints; None at its exit or after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                self.lines.put(None)  # later calls see the end too
                return None
            s = line.strip()
            if s.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    obj = json.loads(s)
                    if isinstance(obj, dict):
                        return obj
            if s:
                self.other = [*self.other[-4:], s[:300]]

    def close(self, wait_s: float = 10.0) -> None:
        """Reap it: a role that printed its result tears its MPS client down itself (a SIGKILL in the
        middle of that is left for one that hangs)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(timeout=wait_s)
        if self.p.poll() is None:
            self.p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(timeout=10)


def failure(role: str, got: dict[str, Any] | None, child: Child, what: str) -> str:
    """One line for a row's errors: the program's own error JSON, else what was missing and its output."""
    if got and "error" in got:
        return f"{role}: {got['error']} at {got.get('at')}"
    rc = child.p.poll()
    return f"{role}: {what} (rc={rc}; output: {' | '.join(child.other) or 'none'})"


def lp_rate(done_ns: list[int], t0: int, t1: int) -> float | None:
    """LP kernels completed per second inside [t0, t1] (CLOCK_MONOTONIC ns)."""
    if t1 <= t0:
        return None
    return sum(1 for t in done_ns if t0 <= t < t1) / ((t1 - t0) / 1e9)


class Runner:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t0 = time.monotonic()
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows_path = self.out / "mech.jsonl"
        self.variants = [BY_NAME[n] for n in a.variants.split(",")] if a.variants else list(VARIANTS)
        self.hp_cpus = benchlib.parse_cpus(a.hp_cpus)
        self.lp_cpus = benchlib.parse_cpus(a.lp_cpus)
        self.base = Path(tempfile.mkdtemp(prefix="fkm", dir="/tmp"))  # short: MPS's Unix socket paths
        self.mps = benchlib.Mps(self.base, dry_run=a.dry_run)
        self.binary: list[str] = []
        self.notes: list[str] = []
        self.cost: dict[str, float] = {}  # measured wall time of a window, by kind

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------------------------- set-up
    def build(self) -> str | None:
        """The binary (None), or why there is none."""
        if self.a.dry_run:
            self.binary = [sys.executable, "-c", STANDIN]
            return None
        if self.a.binary:
            self.binary = [self.a.binary]
            return None if Path(self.a.binary).is_file() else f"--binary {self.a.binary}: no such file"
        cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        nvcc = shutil.which("nvcc") or f"{cuda}/bin/nvcc"
        exe = Path(self.a.build_dir) / "corun_mech"
        exe.parent.mkdir(parents=True, exist_ok=True)
        stubs = Path(cuda) / "lib64" / "stubs"  # where a machine has no unversioned libcuda.so
        libdirs = [f"-L{stubs}"] if stubs.is_dir() else []
        cmd = [nvcc, "-O2", "-arch=sm_90", "-o", str(exe), str(SRC), *libdirs, "-lcuda"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            return f"nvcc: {e!r}"
        if r.returncode != 0:
            return f"nvcc rc={r.returncode}: {(r.stdout + r.stderr).strip()[-600:]}"
        self.binary = [str(exe)]
        return None

    def env(self, v: Variant, role: str) -> dict[str, str]:
        env: dict[str, str] = benchlib.base_env()
        env.update(self.mps.env())
        if role == "lp":
            env.update(dict(v.lp_env))
        if self.a.dry_run:
            env["DRY_HP_US"] = str(DRY_HP_US * v.dry_hp)
            env["DRY_LP_KPS"] = str(DRY_LP_KPS * v.dry_lp)
            if role == "lp" and v.name in self.a.dry_fail.split(","):
                env["DRY_FAIL"] = "1"
        return env

    # ------------------------------------------------------------------------------------- a window
    def window(self, v: Variant, rep: int) -> dict[str, Any]:
        """One variant once: its row (metrics None and errors said where something failed)."""
        a = self.a
        row: dict[str, Any] = {
            "rep": rep, "variant": v.name, "dry_run": a.dry_run, "t": benchlib.now_iso(),
            "lp_env": dict(v.lp_env), "lp_args": list(v.lp_args), "hp_args": list(v.hp_args),
            "hp_p50_us": None, "hp_p99_us": None, "lp_kernels_per_s": None, "errors": [],
        }  # fmt: skip
        t_start = time.monotonic()
        try:
            return self._window(v, row)
        except OSError as e:  # the binary could not be started
            row["errors"].append(f"start: {e!r}")
            return row
        finally:
            row["wall_s"] = round(time.monotonic() - t_start, 3)
            self.cost[v.name] = max(self.cost.get(v.name, 0.0), row["wall_s"])

    def _window(self, v: Variant, row: dict[str, Any]) -> dict[str, Any]:
        a = self.a
        lp: Child | None = None
        hp: Child | None = None
        try:
            if v.lp:
                lp_secs = a.warmup_s + a.window_s + 120  # a bound if the driver dies; SIGTERM ends it
                lp = Child([*self.binary, "lp", "--seconds", str(lp_secs), *v.lp_args], self.env(v, "lp"),
                           self.lp_cpus)  # fmt: skip
                ready = lp.next_json(a.start_timeout_s)
                if not ready or not ready.get("ready"):
                    row["errors"].append(failure("lp", ready, lp, "no ready line"))
                    return row
                row["lp_ready"] = ready
                row["lp_kernel_us"] = ready.get("kernel_us")
            if v.hp:
                hp = Child([*self.binary, "hp", "--seconds", str(a.window_s), "--warmup", str(a.warmup_s),
                            *v.hp_args], self.env(v, "hp"), self.hp_cpus)  # fmt: skip
                res = hp.next_json(a.start_timeout_s + a.warmup_s + a.window_s + 20)
                hp.close()
                if not res or "error" in res or "p50_us" not in res:
                    row["errors"].append(failure("hp", res, hp, "no result"))
                    return row
                row["hp"] = res
                row["hp_p50_us"], row["hp_p99_us"] = res.get("p50_us"), res.get("p99_us")
                row["hp_kernel_ev_us"] = res.get("kernel_ev_us_p50")  # after the window, beside the LP
                win = res.get("win_ns") or [0, 0]
                t0, t1 = int(win[0]), int(win[1])
            else:
                t0 = time.monotonic_ns() + int(a.warmup_s * 1e9)
                time.sleep(a.warmup_s + a.window_s)
                t1 = time.monotonic_ns()
            if lp is not None:
                if lp.p.poll() is not None:  # its kernels/s would count time it was not running
                    row["errors"].append(failure("lp", None, lp, "exited before the window ended"))
                    return row
                lp.p.send_signal(signal.SIGTERM)
                fin = lp.next_json(20)
                if not fin or "done_ns" not in fin:
                    row["errors"].append(failure("lp", fin, lp, "no result after SIGTERM"))
                    return row
                # A starved LP completes nothing in the window: a result (0), not an error.
                row["lp_kernels_per_s"] = lp_rate([int(x) for x in fin.pop("done_ns")], t0, t1)
                row["lp"] = fin
            row["window_s"] = round((t1 - t0) / 1e9, 4)
            return row
        finally:
            for c in (hp, lp):
                if c is not None:
                    if c.p.poll() is None:  # an early return or an exception: it was not told to stop
                        c.p.send_signal(signal.SIGTERM)
                    c.close(5.0)

    def estimate(self, v: Variant) -> float:
        """Seconds a window of v is expected to take: measured, else a model of start-ups and the window."""
        if v.name in self.cost:
            return float(self.cost[v.name])
        starts = (1.2 if v.lp else 0.0) + (0.8 if v.hp else 0.0)
        return float(self.a.warmup_s + self.a.window_s) + (0.1 if self.a.dry_run else starts)

    # ------------------------------------------------------------------------------------- the run
    def run(self) -> int:
        rc = 1
        try:
            rc = self.windows()
        finally:  # a SIGTERM (sys.exit) too: MPS stopped, what was measured summarized
            self.mps.stop()
            for name in ("control.log", "server.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(self.mps.log / name, self.out / f"mps_{name}")
            shutil.rmtree(self.base, ignore_errors=True)
            self.finish()
        return rc

    def windows(self) -> int:
        """Every (repetition, variant) not yet done, rotated per repetition, within the budget."""
        a = self.a
        done = {(r["rep"], r["variant"]) for r in benchlib.read_jsonl(self.rows_path) if not r.get("errors")}
        why = self.build()
        if not why and not a.dry_run and not self.mps.start():
            why = f"MPS not started: {self.mps.error}; {self.mps.server_log_tail(5)}"
        if why:
            self.notes.append(why)
            print(f"[mech] {why}", flush=True)
            return 1
        for rep in range(a.reps):
            k = rep % len(self.variants)
            for v in self.variants[k:] + self.variants[:k]:
                if (rep, v.name) in done:
                    continue
                if self.elapsed() + self.estimate(v) > a.budget_s:
                    self.notes.append(f"budget: stopped at {self.elapsed():.0f} s, before rep {rep}")
                    return 0
                row = self.window(v, rep)
                benchlib.append_jsonl(self.rows_path, row)
                print(f"[mech] rep {rep} {v.name:<22} hp p50 {fmt(row['hp_p50_us'], 1):>8} us  "
                      f"lp {fmt(row['lp_kernels_per_s'], 1):>8} k/s  {row['wall_s']:.1f} s  "
                      f"{'; '.join(row['errors'])}", flush=True)  # fmt: skip
        return 0

    def finish(self) -> None:
        rows = benchlib.read_jsonl(self.rows_path)
        smi = {"driver": None, "gpu_smi": None} if self.a.dry_run else benchlib.nvidia_smi_query()
        summary = summarize(rows, [v.name for v in self.variants])
        meta = {
            "date": benchlib.now_iso(),
            "gpu": "dry-run" if self.a.dry_run else smi.get("gpu_smi"),
            "driver": smi.get("driver"),
            "commit": benchlib.git_commit(),
            "dry_run": self.a.dry_run,
            "params": {k: getattr(self.a, k) for k in PARAMS},
            "elapsed_s": round(self.elapsed(), 1),
        }
        notes = [*self.notes, *summary.pop("notes")]
        benchlib.write_json(self.out / "mech.json", {**meta, **summary, "notes": notes})
        print(table(summary["variants"]), flush=True)
        for n in notes:
            print(f"[mech] note: {n}", flush=True)


# ---------------------------------------------------------------------------------------------- summary


def summarize(rows: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    """Per variant, medians over repetitions of ratios taken within each repetition (the last row of
    a (rep, variant) counts: a resumed run's retry replaces a failed one)."""
    by: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(int(r["rep"]), {})[str(r["variant"])] = r
    names = [n for n in order if any(n in reps for reps in by.values())]
    names += sorted({n for reps in by.values() for n in reps} - set(names))
    out: dict[str, Any] = {}

    def val(rep: dict[str, dict[str, Any]], name: str, key: str) -> float | None:
        r = rep.get(name)
        x = r.get(key) if r else None
        return float(x) if isinstance(x, (int, float)) else None

    for n in names:
        ratios: dict[str, list[float | None]] = {k: [] for k in ("hp_p50", "hp_p99", "lp_vs_mps", "lp_tput")}
        raw: dict[str, list[float | None]] = {k: [] for k in RAW_KEYS}
        errors: list[str] = []
        sms: set[int] = set()
        for rep in by.values():
            row = rep.get(n)
            if row is None:
                continue
            errors += [e for e in row.get("errors", []) if e not in errors]
            for k in raw:
                raw[k].append(val(rep, n, k))
            for q in ("p50", "p99"):
                hp, alone = val(rep, n, f"hp_{q}_us"), val(rep, "hp_alone", f"hp_{q}_us")
                ratios[f"hp_{q}"].append(benchlib.ratio(hp, alone))
            lps = val(rep, n, "lp_kernels_per_s")
            ratios["lp_vs_mps"].append(benchlib.ratio(lps, val(rep, "mps", "lp_kernels_per_s")))
            ratios["lp_tput"].append(benchlib.ratio(lps, val(rep, "lp_alone", "lp_kernels_per_s")))
            ready = row.get("lp_ready") or {}
            for k in ("affinity_sms", "green_sms"):
                if isinstance(ready.get(k), int) and ready[k] > 0:
                    sms.add(ready[k])
        v: dict[str, Any] = {"reps": sum(1 for rep in by.values() if n in rep)}
        for k, xs in ratios.items():
            v[f"{k}_ratio"] = benchlib.rnd(benchlib.median(xs))
            v[f"{k}_ratio_spread"] = [benchlib.rnd(x) for x in benchlib.spread(xs) or []] or None
        for k, xs in raw.items():
            v[k] = benchlib.rnd(benchlib.median(xs), 2)
        v["lp_sms_got"] = sorted(sms) or None
        v["errors"] = errors
        out[n] = v
    support = {r.get("lp_ready", {}).get("affinity_supported") for r in rows if r.get("lp_ready")}
    support |= {r.get("hp", {}).get("affinity_supported") for r in rows if r.get("hp")}
    sms_all = {r["hp"].get("sms") for r in rows if r.get("variant") == "hp_alone" and r.get("hp")}
    notes = [
        "hp_*_ratio: HP request latency / hp_alone's, same repetition; lp_vs_mps_ratio: LP kernels/s / the "
        "mps variant's; lp_tput_ratio: / lp_alone's; median over repetitions, *_spread [min, max]",
        "LP kernels/s counted inside the HP's measured window (CLOCK_MONOTONIC), not during start-ups",
        f"cuDeviceGetExecAffinitySupport(SM_COUNT) reported {sorted(s for s in support if s is not None)}",
    ]
    if any(r.get("dry_run") for r in rows):
        notes.append("dry-run: a Python stand-in for both roles; every number is made up")
    return {
        "sms": sms_all.pop() if len(sms_all) == 1 else None,
        "affinity_supported": sorted(s for s in support if s is not None),
        "variants": out,
        "notes": notes,
    }


def fmt(x: Any, nd: int = 2) -> str:
    return "-" if not isinstance(x, (int, float)) else f"{x:.{nd}f}"


COLUMNS = [  # header, key, width, decimals
    ("hp p50 us", "hp_p50_us", 9, 1), ("p50 x", "hp_p50_ratio", 6, 2), ("p99 x", "hp_p99_ratio", 6, 2),
    ("lp k/s", "lp_kernels_per_s", 8, 1), ("lp/mps", "lp_vs_mps_ratio", 7, 2),
    ("lp/alone", "lp_tput_ratio", 8, 2),
]  # fmt: skip


def table(variants: dict[str, Any]) -> str:
    lines = ["variant".ljust(22) + "".join(f" {h:>{w}}" for h, _, w, _ in COLUMNS) + "  lp SMs  errors"]
    for n, v in variants.items():
        sms = ",".join(map(str, v.get("lp_sms_got") or [])) or "-"
        cells = "".join(f" {fmt(v.get(k), nd):>{w}}" for _, k, w, nd in COLUMNS)
        lines.append(f"{n:<22}{cells}  {sms:>6}  {'; '.join(v.get('errors') or [])[:90]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results folder: mech.jsonl, mech.json")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--window-s", type=float, default=2.0, help="HP's measured time per window")
    p.add_argument("--warmup-s", type=float, default=0.3, help="HP's requests before it measures")
    p.add_argument("--budget-s", type=float, default=200.0, help="no window is started that would end after")
    p.add_argument("--variants", default="", help=f"comma list (default all): {','.join(BY_NAME)}")
    p.add_argument("--binary", help="a built corun_mech (skips nvcc)")
    p.add_argument("--build-dir", default=str(benchlib.REPO_ROOT / "build" / "corun_mech"))
    p.add_argument("--hp-cpus", default="2", help="CPUs the HP is pinned to")
    p.add_argument("--lp-cpus", default="4", help="CPUs the LP is pinned to")
    p.add_argument("--start-timeout-s", type=float, default=30.0, help="a role's start (MPS server's too)")
    p.add_argument("--dry-run", action="store_true", help="no GPU, nvcc or MPS: a Python stand-in")
    p.add_argument("--dry-fail", default="", help="dry-run: variants whose LP fails to start (error path)")
    p.add_argument("--plan-only", action="store_true", help="print the variants and the expected duration")
    a = p.parse_args(argv)
    unknown = [n for n in a.variants.split(",") if n and n not in BY_NAME] if a.variants else []
    if unknown:
        p.error(f"unknown variants {unknown}; known: {','.join(BY_NAME)}")
    r = Runner(a)
    if a.plan_only:
        shutil.rmtree(r.base, ignore_errors=True)
        per_rep = sum(r.estimate(v) for v in r.variants)
        print(f"{len(r.variants)} variants x {a.reps} reps: {', '.join(v.name for v in r.variants)}")
        print(f"expected ~{per_rep * a.reps + (0 if a.dry_run else 15):.0f} s (budget {a.budget_s:.0f} s)")
        return 0
    # A `timeout` around the driver sends SIGTERM: unwind, so that the LP and MPS are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return r.run()


if __name__ == "__main__":
    sys.exit(main())
