"""FIKIT scheduling across real processes, in simulated GPU time.

Every test here runs real client processes under the real libfikit.so on the
fake driver, whose kernels share one device timeline (FAKECUDA_TIMELINE):
a low-priority kernel that runs delays a high-priority one exactly as on a
time-sliced GPU.  Kernels are milliseconds long so that host noise (process
start, Python, sleep) stays small against them; margins are stated per test.
The domain is self-granting (no daemon): the library's own path for hosts
without fikitd.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fikitd.shm import Domain

WORKLOAD = Path(__file__).resolve().parent / "fakecuda" / "workload.py"
DURATIONS = ("hp_conv=3000,hp_fc=1000,hp_q=200,hp_gap=200,lp_small=1000,lp_mid=4000,lp_long=20000,mid_k=1500,"
             "*=500")


@dataclass
class Proc:
    p: subprocess.Popen[str]
    stats: Path
    progress: Path

    def result(self, timeout: float = 60) -> dict[str, Any]:
        out, err = self.p.communicate(timeout=timeout)
        assert self.p.returncode == 0, f"client failed ({self.p.returncode}):\n{err}"
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        assert lines, f"client printed no result:\n{out}\n{err}"
        return dict(json.loads(lines[-1]))

    def lib_stats(self) -> dict[str, Any]:
        files = list(self.stats.parent.glob(self.stats.name.replace("%p", "*")))
        assert files, f"no FIKIT_STATS file for {self.stats}"
        return dict(json.loads(files[0].read_text()))

    def progress_times(self) -> list[int]:
        if not self.progress.exists():
            return []
        return [int(ln.split()[0]) for ln in self.progress.read_text().splitlines() if ln.strip()]


class Cluster:
    """A domain, a shared device timeline, and the clients started on them."""

    def __init__(self, root: Path, fake_dir: Path, lib: Path, mode: str, budget_us: int = 500,
                 idle_us: int = 1500, corun_sm_pct: int = 0, quiet_stride: int = 32,
                 quiet_gap_us: int = 100) -> None:
        self.root = root
        self.fake_dir = fake_dir
        self.lib = lib
        self.domain_dir = root / "gpu0"
        os.environ["FIKIT_LIBRARY"] = str(lib)
        self.domain = Domain.create(self.domain_dir, 0, mode=mode, self_grant=True, budget_us=budget_us,
                                    idle_us=idle_us, unknown_us=1000, corun_sm_pct=corun_sm_pct,
                                    quiet_stride=quiet_stride, quiet_gap_us=quiet_gap_us)
        self.timeline = root / "timeline"
        self.procs: list[Proc] = []
        self.n = 0
        self.lib_env: dict[str, str] = {}  # more library settings for every preloaded client

    def env(self, prio: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("FIKIT_", "FAKECUDA_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
        env.update(LD_LIBRARY_PATH=str(self.fake_dir), FAKECUDA_DURATIONS=DURATIONS,
                   FAKECUDA_TIMELINE=str(self.timeline))
        if prio is not None:
            env.update(LD_PRELOAD=str(self.lib), FIKIT_DOMAIN=str(self.domain_dir), FIKIT_PRIO=prio,
                       **self.lib_env)
        return env

    def start(self, kernels: str, prio: str | None, repeat: int = 0, seconds: float = 30.0,
              until: Path | None = None, wait_ready: bool = True, extra: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Proc:
        self.n += 1
        stats = self.root / f"stats{self.n}.%p.json"
        progress = self.root / f"progress{self.n}"
        ready = self.root / f"ready{self.n}"
        args = [sys.executable, str(WORKLOAD), "--kernels", kernels, "--repeat", str(repeat),
                "--seconds", str(seconds), "--progress", str(progress), "--ready", str(ready)]
        if until:
            args += ["--until", str(until)]
        args += list(extra)
        full = {**self.env(prio), **(env or {}), "FIKIT_STATS": str(stats)}
        p = subprocess.Popen(args, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = Proc(p, stats, progress)
        self.procs.append(proc)
        if wait_ready:
            deadline = time.monotonic() + 20
            while not ready.exists():
                assert p.poll() is None, f"client died at start: {p.communicate()[1]}"
                assert time.monotonic() < deadline, "client not ready in 20 s"
                time.sleep(0.01)
        return proc

    def close(self) -> None:
        for pr in self.procs:
            if pr.p.poll() is None:
                pr.p.kill()
                pr.p.communicate()
        self.domain.close()


@pytest.fixture
def cluster(tmp_path: Path, fake_build: Any, libfikit: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(mode: str = "fikit", budget_us: int = 500, idle_us: int = 1500, corun: int = 0,
             quiet_stride: int = 32, quiet_gap_us: int = 100) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", fake_build.fake_dir, libfikit, mode, budget_us, idle_us,
                    corun, quiet_stride, quiet_gap_us)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


HP = "hp_conv:1000,hp_fc:5000"  # 4 ms of GPU, 6 ms of host gaps per iteration
HP_ITERS = 25


def p50(res: dict[str, Any]) -> float:
    """Median iteration time: like the latency p50 the benchmarks compare, past the first iterations
    (the library measures a kernel's duration and gap the first times it sees it)."""
    it = sorted(res["iter_s"][3:])
    return float(it[len(it) // 2])


def hp_solo_s(c: Cluster) -> float:
    return p50(c.start(HP, "high", repeat=HP_ITERS).result())


def run_pair(c: Cluster, lp_kernels: str, lp_prio: str | None = "low",
             hp_prio: str | None = "high") -> tuple[dict[str, Any], dict[str, Any], Proc, Proc]:
    stop = c.root / "stop"
    lp = c.start(lp_kernels, lp_prio, until=stop)
    time.sleep(0.2)  # the LP stream is running before HP starts
    hp = c.start(HP, hp_prio, repeat=HP_ITERS)
    hp_res = hp.result()
    stop.touch()
    lp_res = lp.result()
    return hp_res, lp_res, hp, lp


def test_off_mode_shows_the_interference_fikit_removes(cluster: Any) -> None:
    """The same pair, `off` then `fikit`: LP kernels that fit HP's gaps slow HP only when not held."""
    c_off = cluster("off")
    solo = hp_solo_s(c_off)
    hp_off, _lp_off, _, _ = run_pair(c_off, "lp_mid:0")
    c_fik = cluster("fikit", budget_us=500)
    hp_fik, lp_fik, hp, lp = run_pair(c_fik, "lp_mid:0")
    slow_off = p50(hp_off) / solo
    slow_fik = p50(hp_fik) / solo
    # off: each HP kernel waits for about half an LP kernel (2 ms of 4): about 1.4x, say >= 1.15.
    assert slow_off >= 1.15, f"off mode should slow HP: {slow_off:.3f}"
    # fikit: LP is let into gaps it fits, with 0.5 ms of budget: HP within 12% of solo.
    assert slow_fik <= 1.12, f"fikit should keep HP near solo: {slow_fik:.3f} (off {slow_off:.3f})"
    assert slow_fik < slow_off
    # and LP still progressed while HP ran: it filled gaps (the 5 ms ones count as HP resting
    # between iterations, being longer than idle_us).
    st = lp.lib_stats()
    assert st["released_gap"] + st["released_idle"] > 20, st
    assert lp_fik["kernels"] > 40, lp_fik
    assert hp.lib_stats()["held_launches"] == 0


def test_long_lp_kernels_wait_for_hp_to_finish(cluster: Any) -> None:
    """A 20 ms LP kernel fits no 5 ms HP gap: it is held until HP is done, and HP runs as if alone."""
    c = cluster("fikit")
    solo = hp_solo_s(c)
    hp_res, _lp_res, _hp, lp = run_pair(c, "lp_long:0")
    slow = p50(hp_res) / solo
    assert slow <= 1.12, f"HP slowed {slow:.3f}x by a held LP"
    st = lp.lib_stats()
    assert st["held_launches"] >= 1 and st["held_us"] > 0.5 * hp_res["elapsed_s"] * 1e6, st
    assert st["released_gap"] == 0, "a 20 ms kernel was released into a 5 ms gap"


def test_strict_mode_runs_lp_only_when_hp_idles(cluster: Any) -> None:
    """strict: small LP kernels that would fit HP's gaps still wait for HP to be wholly idle (here
    every HP gap is shorter than idle_us, so HP never rests while it runs)."""
    c = cluster("strict", idle_us=8000)
    solo = hp_solo_s(c)
    hp_res, _lp_res, _hp, lp = run_pair(c, "lp_small:0")
    assert p50(hp_res) / solo <= 1.12
    st = lp.lib_stats()
    assert st["released_gap"] == 0, st
    # Once HP's gaps are measured (after its first iterations), LP finished no kernel while HP ran,
    # apart from one in flight.
    hp_times = _hp.progress_times()[6:]
    during = [t for t in lp.progress_times() if hp_times[0] < t < hp_times[-1]]
    assert len(during) <= 1, f"{len(during)} LP kernels ran while HP was active in strict mode"


def test_three_levels(cluster: Any) -> None:
    """normal defers to high, low to both; high is never held."""
    c = cluster("fikit")
    solo = hp_solo_s(c)
    stop = c.root / "stop"
    low = c.start("lp_long:0", "low", until=stop)
    normal = c.start("lp_long:0", "normal", until=stop)
    time.sleep(0.2)
    hp = c.start(HP, "high", repeat=HP_ITERS)
    hp_res = hp.result()
    stop.touch()
    low.result()
    normal.result()
    assert p50(hp_res) / solo <= 1.15
    assert hp.lib_stats()["held_launches"] == 0
    assert normal.lib_stats()["held_launches"] >= 1
    assert low.lib_stats()["held_launches"] >= 1


def test_several_lp_clients_all_progress_and_hp_is_protected(cluster: Any) -> None:
    c = cluster("fikit", budget_us=500)
    solo = hp_solo_s(c)
    stop = c.root / "stop"
    lps = [c.start("lp_small:0", "low", until=stop) for _ in range(3)]
    time.sleep(0.2)
    hp_res = c.start(HP, "high", repeat=HP_ITERS).result()
    stop.touch()
    results = [lp.result() for lp in lps]
    assert p50(hp_res) / solo <= 1.2, p50(hp_res) / solo
    for r, lp in zip(results, lps, strict=True):
        assert r["kernels"] > 10, r
        assert lp.lib_stats()["released_gap"] + lp.lib_stats()["released_idle"] > 10


def test_dead_hp_releases_held_lp_within_100ms(cluster: Any) -> None:
    """kill -9 of the HP client while LP is held: LP runs again within 100 ms.  (idle_us is long so
    that a scheduling hiccup of HP on a busy 2-core CI machine is not taken for HP idling.)"""
    c = cluster("fikit", idle_us=8000)
    stop = c.root / "stop"
    hp = c.start("hp_conv:200", "high", repeat=0, seconds=30)  # busy back to back
    time.sleep(0.3)
    lp = c.start("lp_long:0", "low", until=stop)
    time.sleep(0.5)
    assert lp.progress_times() == [] or len(lp.progress_times()) <= 1, "LP ran beside a busy HP"
    killed = time.monotonic_ns()
    hp.p.send_signal(signal.SIGKILL)
    hp.p.communicate()
    deadline = time.monotonic() + 5
    while len(lp.progress_times()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.touch()
    lp.result()
    times = lp.progress_times()
    assert times, "LP never ran after HP died"
    first_after = min(t for t in times if t > killed)
    # The first LP kernel after the kill completes within 100 ms plus its own 20 ms of run time.
    assert first_after - killed <= 120_000_000, f"LP resumed {(first_after - killed) / 1e6:.1f} ms after kill"


def test_mode_switch_at_run_time_releases_lp(cluster: Any) -> None:
    """The daemon (here, the test) switches strict -> off: a held LP runs at once.  (idle_us is long
    so that a scheduling hiccup of HP on a busy 2-core CI machine is not taken for HP idling.)"""
    c = cluster("strict", idle_us=8000)
    stop = c.root / "stop"
    hp = c.start("hp_conv:200", "high", repeat=0, seconds=30)
    time.sleep(0.3)
    lp = c.start("lp_small:0", "low", until=stop)
    time.sleep(0.5)
    before = len(lp.progress_times())
    switched = time.monotonic_ns()
    c.domain.set_config(mode="off")
    time.sleep(0.5)
    after = [t for t in lp.progress_times() if t > switched]
    stop.touch()
    lp.result()
    hp.p.kill()
    hp.p.communicate()
    assert before <= 1, f"LP ran {before} kernels beside a busy HP in strict mode"
    assert len(after) >= 20, f"only {len(after)} LP kernels in 0.5 s after switching to off"
    assert after[0] - switched < 100_000_000


def test_no_hp_lp_runs_free(cluster: Any) -> None:
    """Alone, a low-priority client is never held and runs as fast as without the library."""
    c = cluster("fikit")
    plain = c.start("lp_small:0", None, repeat=200).result()
    under = c.start("lp_small:0", "low", repeat=200)
    res = under.result()
    assert under.lib_stats()["held_launches"] == 0
    assert res["elapsed_s"] <= plain["elapsed_s"] * 1.25 + 0.05


def test_a_domain_without_a_gpu_uuid_serves_device_zero_only(cluster: Any) -> None:
    """FIKIT_DOMAIN made without a driver (its header names no GPU) is device 0's: on a host of two
    devices, a busy HP on device 0 holds an LP there, and the LP's launches on device 1, which no
    domain serves, run free (measured, never held)."""
    c = cluster("fikit", idle_us=8000)
    two = {"FAKECUDA_DEVICES": "2"}
    stop = c.root / "stop"
    hp = c.start("hp_conv:200", "high", until=stop, env=two)
    time.sleep(0.3)
    lp = c.start("lp_long:0", "low", until=stop, env=two, extra=("--devices", "0,1"))
    time.sleep(1.0)
    stop.touch()
    res = lp.result()
    hp.result()
    doms = {x["device"]: x for x in lp.lib_stats()["domains"]}
    assert doms[0]["gpu"] == 0 and doms[0]["slot"] >= 0 and doms[0]["held_launches"] >= 1, doms
    assert doms[1]["gpu"] is None and doms[1]["slot"] == -1 and doms[1]["held_launches"] == 0, doms
    ran = {d: r["kernels"] for d, r in res["by_device"].items()}
    assert ran["1"] >= 20 and ran["0"] <= max(3, ran["1"] // 5), ran


def test_lp_runs_free_beside_an_idle_hp(cluster: Any) -> None:
    """A high-priority process that is alive but idle (a server between requests) must cost a
    low-priority job nothing: it queues a whole step of kernels at once and is never held.  On the
    H100 an earlier rule kept LP's queue within the HP budget here and cut training throughput 30%."""
    c = cluster("fikit")
    hp = c.start("hp_fc:20000000", "high", repeat=1)  # one kernel, then 20 s idle on the host
    try:
        time.sleep(0.2)
        step = ",".join(["lp_small:0"] * 8)  # a step queued whole, then waited for
        alone = c.start(step, None, repeat=20, extra=("--no-sync",)).result()
        lp = c.start(step, "low", repeat=20, extra=("--no-sync",))
        res = lp.result()
    finally:
        hp.p.kill()
        hp.p.communicate()
    st = lp.lib_stats()
    assert st["held_launches"] == 0, st
    assert st["released_idle"] > 100, st
    assert res["elapsed_s"] <= alone["elapsed_s"] * 1.15 + 0.05, (res["elapsed_s"], alone["elapsed_s"])


def test_lp_queues_little_while_a_busy_hp_only_pauses(cluster: Any) -> None:
    """A back-to-back HP that stops for a few milliseconds (a garbage collection, a host hiccup) is
    idle to the policy, but it is coming back: LP may use the pause, yet keep no more than idle_us
    of work queued, or HP's next kernel waits behind a whole training step (here about 2x solo
    without the bound). The motive: on two H200s a back-to-back ResNet-50's p99 was 1.09-1.14x solo beside
    training and 0.96-0.99x with its LPs idle.
    It also needs HP's predictions to restart at each stream sync: LP's first step, queued before
    HP's first launch, makes HP's first kernels measure long, and HP's predicted busy time then ran
    ever further ahead of the truth, so that LP never found it idle at all."""
    c = cluster("fikit")  # idle_us 1500: a pause is any idle stretch within 15 ms of HP's last launch
    hp_plan = ",".join(["hp_fc:0"] * 9 + ["hp_fc:8000"])  # 10 ms of kernels, then 8 ms on the host
    solo = p50(c.start(hp_plan, "high", repeat=20).result())
    stop = c.root / "stop"
    step = ",".join(["lp_small:0"] * 32)  # 32 ms of work queued at once, as a training step does
    lp = c.start(step, "low", until=stop, extra=("--no-sync",))
    time.sleep(0.2)
    hp = c.start(hp_plan, "high", repeat=20)
    hp_res = hp.result()
    stop.touch()
    lp.result()
    slow = p50(hp_res) / solo
    # Queuing the whole step into the pause would cost HP over 20 ms an iteration of 18 (about
    # 2x); keeping 1.5 ms queued, at most about 2.5 ms (one more 1 ms kernel launched just under
    # the bound), 1.14x, with room for a loaded 2-core CI host.
    assert slow <= 1.3, f"HP {slow:.3f}x solo: LP queued deep into its pause"
    st = lp.lib_stats()
    assert st["released_idle"] > 20, st  # LP still ran in the pauses
    assert st["held_launches"] > 20, st  # ...a kernel at a time


def test_corun_runs_long_lp_beside_busy_hp(cluster: Any) -> None:
    """Co-running (issue 11): a 20 ms LP kernel fits no HP gap, so gap filling alone holds it while
    HP runs; with an LP SM share of 50% it runs beside HP on a green context (the fake driver runs
    such work on its own partition, stretched by the SMs it lacks) and HP keeps its latency.  The
    app stream still waits for each redirected kernel: LP's kernels complete one stretched kernel
    apart, never sooner."""
    c = cluster("fikit", corun=50)
    solo = hp_solo_s(c)
    hp_res, _lp_res, hp, lp = run_pair(c, "lp_long:0")
    assert p50(hp_res) / solo <= 1.12, p50(hp_res) / solo
    st = lp.lib_stats()
    assert st["released_corun"] >= 3, st
    assert hp.lib_stats()["held_launches"] == 0
    # 20 ms on 72 of 132 SMs (50% rounded up to the partition granularity of 8) is 36.7 ms.
    times = lp.progress_times()
    hp_t = hp.progress_times()
    during = [t for t in times if hp_t[6] < t < hp_t[-1]]
    assert len(during) >= 3, f"LP finished {len(during)} kernels while HP ran"
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(during)]
    assert min(gaps) >= 30.0, f"LP kernels completed {min(gaps):.1f} ms apart: the stream order was lost"


def test_corun_share_change_at_run_time_moves_lp_to_a_new_partition(cluster: Any) -> None:
    """fikitd's "auto" share moves while clients run (fikitd/share.py): the library must follow the
    domain's corun_sm_pct on the next launch, on a green context of the new size.  In the fake
    driver a 20 ms LP kernel takes 20 x 132/72 = 36.7 ms on 50% (72 SMs) and 20 x 132/40 = 66 ms
    on 25% (rounded up to 40 SMs)."""
    c = cluster("fikit", corun=50, idle_us=8000)
    stop = c.root / "stop"
    hp = c.start("hp_conv:200", "high", repeat=0, seconds=30)
    time.sleep(0.3)
    lp = c.start("lp_long:0", "low", until=stop)
    time.sleep(0.6)
    switched = time.monotonic_ns()
    c.domain.set_config(corun_sm_pct=25)
    time.sleep(0.9)
    stop.touch()
    lp.result()
    hp.p.kill()
    hp.p.communicate()
    times = lp.progress_times()
    before = [(b - a) / 1e6 for a, b in itertools.pairwise(t for t in times if t < switched)]
    after = [(b - a) / 1e6 for a, b in itertools.pairwise(t for t in times if t > switched + 100_000_000)]
    assert len(before) >= 3 and len(after) >= 3, (before, after)
    assert 33 <= statistics.median(before) <= 45, before
    assert 60 <= statistics.median(after) <= 80, after
    assert lp.lib_stats()["released_corun"] >= len(before) + len(after)


def test_corun_kernels_are_not_timed_in_profile_mode(cluster: Any) -> None:
    """In profiling mode CUPTI times every kernel, but a co-running one runs confined to part of the SMs
    (36.7 ms for a 20 ms kernel here): its record is left out, as its event sample is in the other modes,
    so the LP kernel's duration stays the 20 ms it takes on the whole GPU."""
    c = cluster("fikit", corun=50)
    c.lib_env = {"FIKIT_PROFILE": "1"}
    _hp_res, _lp_res, hp, lp = run_pair(c, "lp_long:0")
    st = lp.lib_stats()
    assert st["released_corun"] >= 3, st
    assert st["timing"] == "cupti" and hp.lib_stats()["timing"] == "cupti", st
    assert st["cupti"]["ignored"] >= st["released_corun"], st["cupti"]
    k = next(k for k in st["kernels"] if k["name"] == "lp_long")
    assert k["dur_us"]["p99"] == pytest.approx(20000, abs=0.001), k


FORKER = r"""
import ctypes, json, os, sys, time
cu = ctypes.CDLL("libcuda.so.1")
dev, ctx, mod, f = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
assert cu.cuInit(0) == 0 and cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0 and cu.cuCtxSetCurrent(ctx) == 0
assert cu.cuModuleLoadData(ctypes.byref(mod), b"hp_fc\0") == 0
assert cu.cuModuleGetFunction(ctypes.byref(f), mod, b"hp_fc") == 0
launch = cu.cuLaunchKernel
launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
assert launch(f, 1, 1, 1, 32, 1, 1, 0, None, None, None) == 0
slots = lambda: sorted(p for p in os.listdir(sys.argv[1]) if p.startswith("slot."))
before = slots()
pids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:          # a data-loader worker: no kernel, then exit
        time.sleep(0.1)
        os._exit(0)
    pids.append(pid)
time.sleep(0.05)
during = slots()
for pid in pids:
    os.waitpid(pid, 0)
after = slots()
child = os.fork()
if child == 0:            # a child that does launch gets a slot of its own
    assert launch(f, 1, 1, 1, 32, 1, 1, 0, None, None, None) == 0
    print("CHILD " + json.dumps(slots()), flush=True)
    os._exit(0)
os.waitpid(child, 0)
print("SLOTS " + json.dumps([before, during, after]), flush=True)
"""


def test_forked_children_take_no_slot_until_they_launch(cluster: Any) -> None:
    """Data-loader workers fork from a client and never launch: they must not take slots (there
    are 64) or register, and their exit must leave the parent's slot alone; a child that launches
    becomes a client of its own."""
    c = cluster("fikit")
    p = subprocess.run([sys.executable, "-c", FORKER, str(c.domain_dir)], env=c.env("low"),
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    out = {ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1]) for ln in p.stdout.splitlines()
           if ln.startswith(("SLOTS ", "CHILD "))}
    before, during, after = out["SLOTS"]
    assert before == during == after and len(before) == 1, out
    assert len(out["CHILD"]) == 2, out


def test_clients_starting_together_get_distinct_slots(cluster: Any) -> None:
    """Clients that claim slots at the same moment each keep their own: a slot file another client
    has just created (its owner pid not written yet) is never taken for a dead client's.  Seen in
    CI: the loser of the race deleted the winner's new file and both claimed slot 0."""
    for n in range(3):
        c = cluster("fikit")
        stop = c.root / f"stop{n}"
        procs = [c.start("lp_small:2000", "low", until=stop, wait_ready=False) for _ in range(8)]
        deadline = time.monotonic() + 20
        while len(list(c.domain_dir.glob("slot.*"))) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.touch()
        slots = []
        for pr in procs:
            pr.result()
            slots.append(pr.lib_stats()["slot"])
        assert sorted(slots) == list(range(8)), slots


# ---- quiet launches (interpose/src/quiet.c) ---------------------------------------------------
# A request loop's shape: 40 launches of 0.2 ms kernels queued at once (8 ms of GPU work), a wait
# for them, then 8 ms on the host before the next request.
BURST = ",".join(["hp_q:0"] * 40)
BURST_ARGS = ("--no-sync", "--rest-us", "8000")


def quiet(proc: Proc) -> dict[str, Any]:
    return dict(proc.lib_stats()["domains"][0]["quiet"])


def test_a_settled_hp_publishes_once_a_stride(cluster: Any) -> None:
    """After eight clean bursts, an HP's bursts are quiet: their launches between strides are only
    counted (the slot's launch count stays exact; its kernel's count is its publishing launches)."""
    c = cluster("fikit")
    hp = c.start(BURST, "high", repeat=60, extra=BURST_ARGS)
    hp.result()
    q, st = quiet(hp), hp.lib_stats()
    assert q["stride"] == 32, q
    assert q["full_bursts"] >= 8 and q["quiet_bursts"] >= 40, q
    # every 64th burst is full again, so at most one of the 60 after learning
    assert q["quiet_bursts"] + q["full_bursts"] >= 58, q
    assert st["domains"][0]["launches"] == 60 * 40, st
    # a quiet burst of 40 launches publishes at its first and at each multiple of 32: 2 or 3
    assert q["quiet_launches"] >= q["quiet_bursts"] * 37, q
    (k,) = [k for k in st["kernels"] if k["name"] == "hp_q"]
    assert k["count"] == 60 * 40 - q["quiet_launches"], (k, q)


def test_lp_beside_a_quiet_hp_waits_out_its_bursts_and_fills_its_rests(cluster: Any) -> None:
    """The covers a quiet burst publishes hold a 4 ms LP kernel for the whole burst, and each sync
    still offers the 8 ms rest.  Here the burst launches a kernel every 0.3 ms or so (0.2 ms long),
    so for 12 ms or more the HP is launching, not waiting in a sync: without the covers the LP sees
    it idle 1.5 ms (idle_us) into each burst, and each 4 ms kernel it runs there makes HP's request
    a fifth longer or more."""
    c = cluster("fikit", quiet_gap_us=2000)
    plan = ",".join(["hp_q:300"] * 40)
    solo = c.start(plan, "high", repeat=60, extra=BURST_ARGS).result()
    stop = c.root / "stop"
    lp = c.start("lp_mid:0", "low", until=stop)
    time.sleep(0.2)
    hp = c.start(plan, "high", repeat=60, extra=BURST_ARGS)
    hp_res = hp.result()
    stop.touch()
    lp.result()
    q = quiet(hp)
    assert q["quiet_bursts"] >= 40, q
    # the quiet bursts only: past learning
    quiet_p50 = statistics.median(hp_res["iter_s"][20:])
    solo_p50 = statistics.median(solo["iter_s"][20:])
    slow = quiet_p50 / solo_p50
    assert slow <= 1.12, f"HP {slow:.3f}x solo beside LP: LP ran inside its bursts"
    st = lp.lib_stats()
    assert st["held_launches"] >= 20, st
    assert st["released_gap"] + st["released_idle"] >= 20, st  # LP filled the rests


def test_a_gap_inside_its_bursts_keeps_an_hp_publishing_every_launch(cluster: Any) -> None:
    """A 3 ms host gap after the same kernel in the middle of each burst (over quiet_gap_us, 100) is
    predicted after that kernel, so lower clients are offered it: such an HP never goes quiet."""
    c = cluster("fikit")
    plan = ",".join(["hp_q:0"] * 19 + ["hp_gap:3000"] + ["hp_q:0"] * 20)
    hp = c.start(plan, "high", repeat=30, extra=BURST_ARGS)
    hp.result()
    q = quiet(hp)
    assert q["quiet_bursts"] == 0 and q["quiet_launches"] == 0, q
    assert q["full_bursts"] >= 28 and q["wide_gaps"] >= 28, q


def test_a_gap_no_lower_client_is_offered_does_not_keep_an_hp_publishing(cluster: Any) -> None:
    """The same 3 ms gap after a kernel that is also launched back to back 39 times a burst: the gap
    predicted after that kernel is its shortest recent one, about 0, so lower clients are never
    offered the 3 ms (as after a host hiccup), and quiet launches hide nothing from them."""
    c = cluster("fikit")
    plan = ",".join(["hp_q:0"] * 19 + ["hp_q:3000"] + ["hp_q:0"] * 20)
    hp = c.start(plan, "high", repeat=30, extra=BURST_ARGS)
    hp.result()
    q = quiet(hp)
    assert q["wide_gaps"] == 0 and q["quiet_bursts"] >= 15, q


@pytest.mark.parametrize(("stride", "prio"), [(1, "high"), (32, "normal")])
def test_only_a_top_client_of_a_quiet_domain_goes_quiet(cluster: Any, stride: int, prio: str) -> None:
    """quiet_stride = 1 turns quiet launches off; a client below the top level never goes quiet
    (a more urgent one may come, and its launches must then be held at once)."""
    c = cluster("fikit", quiet_stride=stride)
    hp = c.start(BURST, prio, repeat=30, extra=BURST_ARGS)
    hp.result()
    q = quiet(hp)
    assert q["quiet_bursts"] == 0 and q["quiet_launches"] == 0, q
    st = hp.lib_stats()
    (k,) = [k for k in st["kernels"] if k["name"] == "hp_q"]
    assert k["count"] == st["domains"][0]["launches"] == 30 * 40, (k, st["domains"])


def test_the_domain_shows_a_quiet_client_stride(cluster: Any) -> None:
    """fikitd's client list (status, top) says which clients publish once a stride: the slot's
    `stride`, 32 while quiet, 1 before."""
    c = cluster("fikit")
    stop = c.root / "stop"
    hp = c.start(BURST, "high", until=stop, extra=BURST_ARGS)
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while 32 not in seen and time.monotonic() < deadline:
        seen |= {int(cl["stride"]) for cl in c.domain.snapshot()["clients"] if cl["pid"] == hp.p.pid}
        time.sleep(0.005)
    stop.touch()
    hp.result()
    assert 32 in seen and seen <= {1, 32}, seen


def test_quiet_launches_switched_off_in_mid_run(cluster: Any) -> None:
    """fikit_set_quiet(0), for benchmarks that compare quiet and full launches in one process: from
    then on every burst publishes at every launch."""
    c = cluster("fikit")
    hp = c.start(BURST, "high", repeat=60, extra=(*BURST_ARGS, "--quiet-off-at", "30"))
    hp.result()
    q, st = quiet(hp), hp.lib_stats()
    # 8 bursts learnt, then quiet ones up to the 30th; every launch of the other 30 published
    assert 15 <= q["quiet_bursts"] <= 22 and q["full_bursts"] == 8, q
    (k,) = [k for k in st["kernels"] if k["name"] == "hp_q"]
    assert k["count"] == 60 * 40 - q["quiet_launches"] and k["count"] >= 30 * 40, (k, q)
