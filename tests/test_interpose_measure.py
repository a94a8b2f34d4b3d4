"""The library's measurements must match the time the (simulated) GPU really spent.

FIKIT's whole policy rests on two predictions per kernel: how long it runs and how long the GPU then
idles before the next launch. The fake driver runs every kernel for a configured time, so the library's
figures can be checked against known answers, in the exact (FIKIT_PROFILE=1) and the sampled mode.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fakecuda_harness import assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import FakeBuild, RunClient

DURATIONS = {"conv": 120, "gemm": 40, "graph": 150}
PARAM_US = 77
MODES = {"sampled": {}, "profile": {"FIKIT_PROFILE": "1"}}


def _by_name(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {k["name"]: k for k in stats["kernels"]}
    for g in stats["graphs"]:
        out["graph"] = g
    return out


@pytest.mark.parametrize("mode", MODES)
def test_durations(run_client: RunClient, mode: str) -> None:
    env = {"FAKECUDA_DURATIONS": "conv=120,gemm=40,graph=150,*=10", **MODES[mode]}
    run = run_client(["--api", "all", "-n", "120", "--kernels", "conv,gemm,k_param", "--param-us",
                      str(PARAM_US)], env=env)
    assert_counts_match(run)
    entries = _by_name(run.stats[run.pid])
    expected = {**DURATIONS, "k_param": PARAM_US}
    for name, us in expected.items():
        dur = entries[name]["dur_us"]
        assert abs(dur["p50"] - us) <= 0.1 * us, f"{name}: measured p50 {dur['p50']} µs, ran {us} µs ({mode})"
        count = entries[name]["count"]
        if mode == "profile":
            assert dur["n"] == count, f"{name}: profile mode measured {dur['n']} of {count} launches"
        else:
            assert 8 <= dur["n"] < count, f"{name}: sampled mode measured {dur['n']} of {count} launches"


def test_settled_kernels_are_sampled_less(run_client: RunClient) -> None:
    """Once its ring of 32 recent runs is full a kernel's prediction has settled, and it is sampled
    64 times less often.

    Each sample costs several driver calls on the launching thread; for a batch-1 model launching
    tens of thousands of kernels a second that was half of the library's cost.
    """
    # Synced after every launch, so each sample is harvested before the next launch (and the
    # pool of 256 samples never fills: a full pool skips a sample, by design).
    run = run_client(["--api", "kernel", "-n", "2048", "--kernels", "gemm", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "gemm=5", "FIKIT_SAMPLE": "4"})
    gemm = _by_name(run.stats[run.pid])["gemm"]
    assert gemm["count"] == 2048
    # the first 8, then 1 in 4 until 32 runs are measured (8, 12, ..., 100), then 1 in 256 (256, ...)
    measured = 0
    for count in range(2048):
        if count < 8 or count % (4 if measured < 32 else 256) == 0:
            measured += 1
    assert measured == 8 + 24 + len(range(256, 2048, 256))
    assert gemm["dur_us"]["n"] == measured, gemm


def test_durations_under_queueing(run_client: RunClient) -> None:
    """Back-to-back launches queue up on the GPU; a kernel's duration must not include its wait."""
    run = run_client(["--api", "kernel", "-n", "300", "--kernels", "conv,gemm"],
                     env={"FAKECUDA_DURATIONS": "conv=120,gemm=40", "FIKIT_SAMPLE": "2"})
    entries = _by_name(run.stats[run.pid])
    for name in ("conv", "gemm"):
        us = DURATIONS[name]
        assert abs(entries[name]["dur_us"]["p50"] - us) <= 0.1 * us, entries[name]
        assert abs(entries[name]["dur_us"]["p99"] - us) <= 0.1 * us, entries[name]


GAP_US = 2000


def _assert_gap(stats: dict[str, Any], name: str, expected: float, context: str) -> None:
    gap = _by_name(stats)[name]["gap_us"]
    tolerance = 0.2 * expected + 50
    assert abs(gap["p50"] - expected) <= tolerance, (
        f"{context}: gap p50 {gap['p50']} µs, expected {expected} ± {tolerance:.0f}: {gap}")


@pytest.mark.parametrize("mode", MODES)
def test_gaps_after_sync(run_client: RunClient, mode: str) -> None:
    """Launch, wait for the kernel, sleep G: the GPU then idles G between kernels."""
    run = run_client(["--kernels", "conv", "-n", "40", "--sync", "stream", "--sleep-us", str(GAP_US)],
                     env={"FAKECUDA_DURATIONS": "conv=120", **MODES[mode]})
    _assert_gap(run.stats[run.pid], "conv", GAP_US, mode)


@pytest.mark.parametrize("sync", ["ctx", "event"])
def test_gaps_other_syncs(run_client: RunClient, sync: str) -> None:
    run = run_client(["--kernels", "conv", "-n", "30", "--sync", sync, "--sleep-us", str(GAP_US)],
                     env={"FAKECUDA_DURATIONS": "conv=120"})
    _assert_gap(run.stats[run.pid], "conv", GAP_US, sync)


def test_gaps_without_sync(run_client: RunClient) -> None:
    """An asynchronous launcher that sleeps G between launches leaves G minus the kernel's time idle."""
    run = run_client(["--kernels", "conv", "-n", "40", "--sleep-us", str(GAP_US)],
                     env={"FAKECUDA_DURATIONS": "conv=120"})
    _assert_gap(run.stats[run.pid], "conv", GAP_US - 120, "async")


def test_back_to_back_has_no_gap(run_client: RunClient) -> None:
    run = run_client(["--kernels", "conv,gemm", "-n", "200"], env={"FAKECUDA_DURATIONS": "conv=120,gemm=40"})
    for name in ("conv", "gemm"):
        gap = _by_name(run.stats[run.pid])[name]["gap_us"]
        assert gap["p50"] < 20, f"{name}: queued kernels show a gap of {gap}"


def test_settled_gaps_are_recorded_less_but_never_a_shorter_one(run_client: RunClient) -> None:
    """Once a kernel's ring of 32 recent gaps is full, 1 gap in 8 after it is recorded, and every gap
    shorter than its shortest recent one, the gap it is predicted to leave.

    Recording a gap reads the previous kernel's entry, two cache lines a launch of a real program
    misses (issue 8's overhead).  Sampling must never hide a shorter gap: the clients below would
    then take the more urgent one for idle longer than it is.
    """
    n, long_us, short_us = 400, 1000, 100
    # every gap ~1000 µs, but the sleep after the next-to-last launch (398): its gap, recorded
    # at the last launch, is the only short one
    run = run_client(["--kernels", "conv", "-n", str(n), "--sleep-us", str(long_us),
                      "--short-from", str(n - 2), "--short-us", str(short_us)],
                     env={"FAKECUDA_DURATIONS": "conv=20"})
    gap = _by_name(run.stats[run.pid])["conv"]["gap_us"]
    assert 32 < gap["n"] < 32 + (n - 33) // 2, f"{gap['n']} of {n - 1} gaps recorded: {gap}"
    assert gap["pred"] < 2 * short_us + 50, f"the last, short gap was not recorded: {gap}"
    assert gap["p50"] > long_us / 2, gap


def test_passthrough_counts_only(run_client: RunClient) -> None:
    run = run_client(["--api", "all", "-n", "50", "--kernels", "inc,conv", "--check"],
                     env={"FIKIT_PASSTHROUGH": "1", "FAKECUDA_DURATIONS": "conv=120"})
    stats = run.stats[run.pid]
    assert stats.get("passthrough") is True
    assert stats["launches"]["cuLaunchKernel"] == run.truth[run.pid]["cuLaunchKernel"]
    assert stats["launches"]["cuGraphLaunch"] == run.truth[run.pid]["cuGraphLaunch"]


# -------------------------------------------------------------------------------------------------
# The fake driver itself: the scheduling tests rely on one process's kernels delaying another's.

def _client_env(fake: FakeBuild, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FIKIT_", "FAKECUDA_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    return {**env, "LD_LIBRARY_PATH": str(fake.fake_dir), **extra}


@pytest.mark.parametrize("shared", [True, False], ids=["shared-timeline", "private"])
def test_fake_timeline_is_shared_between_processes(fake_build: FakeBuild, tmp_path: Path,
                                                   shared: bool) -> None:
    timeline = {"FAKECUDA_TIMELINE": str(tmp_path / "timeline")} if shared else {}
    env = _client_env(fake_build, **timeline)
    long = subprocess.Popen([str(fake_build.client), "--kernels", "long_param", "--param-us", "1000000",
                             "-n", "1", "--sync", "stream"], env=env, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.1)
        t0 = time.monotonic()
        subprocess.run([str(fake_build.client), "-n", "1", "--sync", "ctx"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        waited = time.monotonic() - t0
    finally:
        assert long.wait(timeout=10) == 0
    # Margins wide enough for a loaded 2-core CI machine to start the second process late.
    if shared:
        assert waited >= 0.4, f"a short kernel finished in {waited:.3f} s behind another process's 1 s one"
    else:
        assert waited < 0.4, f"without a shared timeline a short kernel took {waited:.3f} s"


def test_fake_sync_waits_for_kernels(fake_build: FakeBuild) -> None:
    env = _client_env(fake_build, FAKECUDA_DURATIONS="conv=2000")
    t0 = time.monotonic()
    subprocess.run([str(fake_build.client), "--kernels", "conv", "-n", "50"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    assert time.monotonic() - t0 >= 0.1, "50 kernels of 2 ms finished in under 0.1 s"


def test_samples_on_an_idle_stream_are_gated(run_client: RunClient) -> None:
    """On an idle stream a start event fires before the kernel is even submitted, so the library
    holds the stream on a host word until the sample's launch is queued (a stream wait): the fake
    driver counts those waits.  Passing through, the library measures nothing and gates nothing."""
    args = ["--kernels", "conv", "-n", "40", "--sync", "stream"]
    env = {"FAKECUDA_DURATIONS": "conv=50"}
    measured = run_client(args, env=env)
    waits = measured.truth[measured.pid]["wait_value"]
    assert waits >= 8, f"first launches of a kernel are measured on an idle stream: {waits} gated"
    plain = run_client(args, env={**env, "FIKIT_PASSTHROUGH": "1"})
    assert plain.truth[plain.pid]["wait_value"] == 0


def test_a_functions_first_launch_is_never_gated(run_client: RunClient) -> None:
    """Lazy loading may make a function's first launch wait for its stream, gate included, so a
    first launch is never gated; the gate's watchdog would open it after 2 ms and turn gating off
    for the process (a quarter of the two-GPU runs' HP processes logged that).  A kernel id is a
    name and a shape, and a program's libraries may each carry their own copy of a kernel: two
    functions, one id.  The second one's first launch is a first launch all the same."""
    args = ["--kernels", "conv,conv,conv", "--load", "module_each", "-n", "24", "--sync", "stream"]
    run = run_client(args, env={"FAKECUDA_DURATIONS": "conv=50", "FAKECUDA_LAZY_LOAD": "1"})
    assert run.rc == 0, run.describe()
    truth = run.truth[run.pid]
    assert truth["lazy_waits"] == 0, f"a first launch waited behind a gate\n{run.describe()}"
    assert not [ln for ln in run.fikit_lines() if "gate" in ln], run.describe()
    # the id's first 8 launches are all measured: the 5 that are no copy's first, behind the gate
    assert truth["wait_value"] >= 5, run.describe()
    assert run.stats[run.pid]["launches"]["cuLaunchKernel"] == 24


def test_a_launch_blocked_behind_a_gate_is_let_go_and_described(run_client: RunClient) -> None:
    """A gated launch that blocks in the driver (here the 5th, a warm launch sampled on an idle
    stream) waits for its own gate: the watchdog opens it after 2 ms and turns gating off.  Its
    one line says what the thread was doing, so that a GPU run's logs tell a launch blocked in
    the driver (asleep there, or spinning) from a thread the host merely preempted."""
    args = ["--kernels", "conv", "-n", "24", "--sync", "stream"]
    run = run_client(args, env={"FAKECUDA_DURATIONS": "conv=50", "FAKECUDA_BLOCK_LAUNCH": "5"})
    assert run.rc == 0, run.describe()
    assert run.truth[run.pid]["lazy_waits"] == 1, run.describe()
    (line,) = [ln for ln in run.fikit_lines() if "gate" in ln]
    m = re.search(r"gating turned off \(shut ([\d.]+) ms; thread (\d+) (\S) in (\S+), ([-\d.]+) ms of CPU "
                  r"since; kernel (\S+), launch (\d+)\)", line)
    assert m, line
    shut, state, cpu = float(m.group(1)), m.group(3), float(m.group(5))
    assert shut >= 2.0 and 0 <= cpu < shut, line
    # the fake driver polls for its word, so the thread is mostly asleep ('S'); seen runnable
    # between two polls with little CPU, it was taken for preempted until the 20 ms limit
    assert state in "SD" or (state == "R" and (cpu * 2 >= shut or shut >= 20.0)), line
    assert (m.group(6), m.group(7)) == ("conv", "5"), line
    assert run.stats[run.pid]["gates"]["turned_off"] is True, run.describe()
    assert run.stats[run.pid]["launches"]["cuLaunchKernel"] == 24


def test_a_forked_child_watches_its_own_gates(run_client: RunClient) -> None:
    """A child forked after its parent gated a sample starts a watchdog of its own: the parent's
    thread is not the child's, and a gate armed with no one watching would leave a blocked
    launch shut for as long as it blocks (here the fake driver's 1 s limit)."""
    args = ["--fork", "--prefork", "10", "--kernels", "conv", "-n", "24", "--sync", "stream"]
    run = run_client(args, env={"FAKECUDA_DURATIONS": "conv=50", "FAKECUDA_BLOCK_LAUNCH": "5"})
    assert run.rc == 0, run.describe()
    (child,) = [r["pid"] for r in run.reports if r["child"] == -1]
    lines = [ln for ln in run.fikit_lines() if ln.startswith(f"fikit[{child}]") and "gate" in ln]
    assert len(lines) == 1, run.describe()
    m = re.search(r"\(shut ([\d.]+) ms;", lines[0])
    assert m and 2.0 <= float(m.group(1)) < 100.0, lines[0]
    assert run.stats[child]["gates"]["turned_off"] is True, run.describe()


def test_the_gate_watchdog_waits_for_a_preempted_thread(libfikit: Path) -> None:
    """A launching thread the host preempts while its gate is shut is not blocked: it opens the
    gate itself once it runs again.  The watchdog's rule (fikit_gate_preempted) waits for a thread
    that is runnable and ran for less than half the time the gate has been shut, as the HP
    processes' launching threads of two-GPU runs 17-18 were (runnable, 4-6 ms with 0.0-0.3 ms of
    CPU); a thread asleep in the driver, or spinning there, is blocked."""
    lib = ctypes.CDLL(str(libfikit))
    f = lib.fikit_gate_preempted
    f.argtypes, f.restype = [ctypes.c_char, ctypes.c_uint64, ctypes.c_uint64], ctypes.c_int
    ms = 1_000_000
    assert f(b"R", int(0.15 * ms), int(4.5 * ms)) == 1  # run 18's HP threads
    assert f(b"R", 0, 2 * ms) == 1
    assert f(b"R", int(1.9 * ms), 2 * ms) == 0  # spinning in the driver
    assert f(b"R", 1 * ms, 2 * ms) == 0
    assert f(b"S", 0, 2 * ms) == 0 and f(b"D", 0, 2 * ms) == 0  # asleep in the driver
    assert f(b"?", 0, 2 * ms) == 0  # unknown: blocked, as before


def test_measuring_turned_off_counts_but_does_not_measure(run_client: RunClient) -> None:
    """fikit_set_measuring(0) (bench/overhead_probe.py's toggle variant) leaves a launch counted but
    neither identified nor measured, until fikit_set_measuring(1); the stream keeps running either way."""
    from fakecuda_harness import kernels_by_name

    run = run_client(["-n", "200", "--kernels", "conv,gemm", "--sync", "stream", "--unmeasured", "50",
                      "--check"], env={"FAKECUDA_DURATIONS": "conv=20,gemm=10"})  # fmt: skip
    stats = run.stats[run.pid]
    # 200 iterations of one launch each, the kernels in turn; the first 50 with measuring off
    assert run.report["check"] is True and run.report["kernels"] == {"conv": 100, "gemm": 100}
    assert stats["launches"]["cuLaunchKernel"] == 200  # every launch counted
    assert kernels_by_name(stats) == {"conv": 75, "gemm": 75}  # identified only with measuring on
    assert all(k["dur_us"]["n"] > 0 for k in stats["kernels"]), stats["kernels"]


def test_kernel_table_is_dense_in_first_launch_order(fake_build: FakeBuild, libfikit: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A program's kernels take the table's first entries, in the order it first launches them.

    Launched in turn, they then sit next to each other, a few to a page; a table hashed by id spread
    them over its 128 pages, a TLB miss on most launches of a real program (issue 8's overhead).
    """
    monkeypatch.setenv("FIKIT_LIBRARY", str(libfikit))
    from fikitd import shm

    dom_dir = tmp_path / "dom"
    shm.Domain.create(dom_dir, 0, self_grant=True).close()
    names = ["k_zeta", "k_alpha", "k_mid", "k_omega", "k_beta"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_"))}
    env.update(LD_LIBRARY_PATH=str(fake_build.fake_dir), LD_PRELOAD=str(libfikit), FIKIT_DOMAIN=str(dom_dir),
               FIKIT_SOCKET=str(tmp_path / "nosock"))
    # 40 iterations 50 ms apart: alive long enough to be read
    proc = subprocess.Popen([str(fake_build.client), "--api", "kernel", "-n", "40", "--sleep-us", "50000",
                             "--kernels", ",".join(names), "--block", "64,1,1", "--vary-block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        dom = shm.Domain.open(dom_dir)
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(seen) < 2 * len(names):
            time.sleep(0.05)
            for i in dom.slot_indices():
                seen = dom.kernels(i)
        # iteration i launches names[i % 5], with twice the block on odd i (--vary-block)
        expected = [(names[i % len(names)], 128 if i % 2 else 64) for i in range(2 * len(names))]
        assert [(k["name"], k["block"][0]) for k in seen] == expected, seen
        slot = next(dom.slot(i) for i in dom.slot_indices())
        assert slot is not None and slot["ktab_used"] == len(expected)
    finally:
        proc.kill()
        proc.wait()
