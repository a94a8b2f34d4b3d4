"""Lean launches (interpose/src/lean.c): the top of a domain records each launch raw, and its counts,
gaps and predictions come from a digest later, at its next sync, when half its ring is written, or
at exit.  What the full path would have counted and measured, the digest must count and measure too.

Kernels settle fast here (FIKIT_SAMPLE=1: 32 measured runs after 32 launches) and a device goes lean
after FIKIT_LEAN_AFTER settled launches in a row, so a few thousand launches are mostly lean.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fakecuda_harness import assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import RunClient

LEAN = {"FIKIT_SAMPLE": "1", "FIKIT_LEAN_AFTER": "16"}
GAP_US = 400


def _by_name(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["name"]: k for k in stats["kernels"]}


def _lean(stats: dict[str, Any]) -> int:
    return sum(int(d["lean_launches"]) for d in stats["domains"])


def _launches(stats: dict[str, Any]) -> int:
    return sum(int(v) for v in stats["launches"].values())


# the records digested by the process's digest thread, or (FIKIT_LEAN_THREAD=0) by the launching one
DIGESTERS = {"thread": {}, "inline": {"FIKIT_LEAN_THREAD": "0"}}


@pytest.mark.parametrize("digest", DIGESTERS)
@pytest.mark.parametrize("sync", ["stream", "ctx", "event"])
def test_lean_launches_are_counted_exactly(run_client: RunClient, sync: str, digest: str) -> None:
    run = run_client(["--kernels", "conv,gemm", "-n", "3000", "--sync", sync],
                     env={"FAKECUDA_DURATIONS": "conv=20,gemm=10", **LEAN, **DIGESTERS[digest]})
    st = run.stats[run.pid]
    assert_counts_match(run)
    assert st["lean_digest"] == digest, st["lean_digest"]
    # the first 32 launches of each kernel and 16 more take the full path, then about one in 64 for
    # its sample
    assert _lean(st) >= 0.9 * _launches(st), st["domains"]


def test_lean_launches_keep_sampling_their_kernels(run_client: RunClient) -> None:
    """About one lean launch in FIKIT_SAMPLE x 64 takes the full path and is timed: settled kernels
    still follow drift."""
    run = run_client(["--kernels", "conv", "-n", "4000", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=30", **LEAN})
    conv = _by_name(run.stats[run.pid])["conv"]
    assert conv["count"] == 4000
    # 32 to settle, then about (4000 - 48) / 64 samples from the lean countdown
    assert 32 + 40 <= conv["dur_us"]["n"] <= 32 + 90, conv["dur_us"]
    assert abs(conv["dur_us"]["p50"] - 30) <= 5, conv["dur_us"]


def test_lean_samples_fall_on_every_kernel_of_a_cycle(run_client: RunClient) -> None:
    """The countdown to the next sample is drawn afresh each time: a program cycling through two
    kernels has both sampled, not the one a fixed count would always land on."""
    run = run_client(["--kernels", "conv,gemm", "-n", "8000", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=20,gemm=10", **LEAN})
    k = _by_name(run.stats[run.pid])
    assert k["conv"]["dur_us"]["n"] >= 32 + 25 and k["gemm"]["dur_us"]["n"] >= 32 + 25, (
        k["conv"]["dur_us"], k["gemm"]["dur_us"])


def test_lean_off_takes_the_full_path(run_client: RunClient) -> None:
    run = run_client(["--kernels", "conv,gemm", "-n", "2000", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=20,gemm=10", **LEAN, "FIKIT_LEAN": "0"})
    assert_counts_match(run)
    assert _lean(run.stats[run.pid]) == 0


def _tsc_trusted() -> bool:
    """Where clock.c stamps lean launches by the TSC: an invariant TSC that the kernel keeps time by."""
    src = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    try:
        flags = Path("/proc/cpuinfo").read_text()
        return src.read_text().strip() == "tsc" and " constant_tsc" in flags and " nonstop_tsc" in flags
    except OSError:
        return False


@pytest.mark.parametrize(("clock", "digest"),
                         [("default", "thread"), ("kernel", "thread"), ("default", "inline")])
def test_lean_gaps_are_measured_as_on_the_full_path(run_client: RunClient, clock: str, digest: str) -> None:
    """Launch, wait, sleep G: the digest sees the gap the full path would have seen (each sync a
    record after the launches before it), whether the records were stamped by the TSC and
    converted or by the clock itself, and whoever digests them."""
    env = {"FAKECUDA_DURATIONS": "conv=120", **LEAN, **DIGESTERS[digest]}
    if clock == "kernel":
        env["FIKIT_CLOCK"] = "kernel"
    run = run_client(["--kernels", "conv", "-n", "300", "--sync", "stream", "--sleep-us", str(GAP_US)],
                     env=env)
    st = run.stats[run.pid]
    assert _lean(st) >= 200, st["domains"]
    want = "tsc" if clock == "default" and _tsc_trusted() else "clock"
    assert st["domains"][0]["lean_clock"] == want, st["domains"]
    gap = _by_name(st)["conv"]["gap_us"]
    assert abs(gap["p50"] - GAP_US) <= 0.2 * GAP_US + 50, gap


def test_lean_gaps_without_sync(run_client: RunClient) -> None:
    """An asynchronous launcher: records are digested when half the ring is written, and at exit."""
    run = run_client(["--kernels", "conv", "-n", "400", "--sleep-us", str(GAP_US)],
                     env={"FAKECUDA_DURATIONS": "conv=120", **LEAN})
    st = run.stats[run.pid]
    assert _lean(st) >= 300, st["domains"]
    gap = _by_name(st)["conv"]["gap_us"]
    expected = GAP_US - 120
    assert abs(gap["p50"] - expected) <= 0.2 * expected + 50, gap


@pytest.mark.parametrize("api", ["ex", "coop", "all"])
def test_every_launch_api_is_lean_but_graphs(run_client: RunClient, api: str) -> None:
    run = run_client(["--api", api, "--kernels", "conv", "-n", "2000", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=20,graph=20", **LEAN})
    st = run.stats[run.pid]
    assert_counts_match(run)
    graphs = int(st["launches"]["cuGraphLaunch"])
    assert _lean(st) >= 0.8 * (_launches(st) - graphs), st["domains"]
    assert _lean(st) <= _launches(st) - graphs


def test_several_launching_threads_stay_on_the_full_path(run_client: RunClient) -> None:
    """Records are written without a lock: a device with several launching threads is never lean."""
    run = run_client(["--kernels", "conv,gemm", "-n", "1500", "--threads", "4", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=5,gemm=5", **LEAN})
    assert_counts_match(run)
    st = run.stats[run.pid]
    assert st["domains"][0]["launching_threads"] == "several"
    # one thread may have run alone, and lean, for a moment before the others started
    assert _lean(st) <= 0.1 * _launches(st), st["domains"]


def test_a_kernel_new_mid_run_is_measured_on_the_full_path(run_client: RunClient) -> None:
    """Lean from early on, then a second shape of the kernel appears (--vary-from): the digest meets
    a kernel it has not seen, the device goes back to the full path, and the new kernel is measured
    from its first launches, as a new kernel always is, until it too has settled."""
    run = run_client(["--kernels", "conv", "-n", "3000", "--vary-block", "--vary-from", "1500",
                      "--sync", "stream"], env={"FAKECUDA_DURATIONS": "conv=20", **LEAN})
    assert_counts_match(run)
    st = run.stats[run.pid]
    shapes = sorted(st["kernels"], key=lambda k: k["block"][0])
    assert [k["count"] for k in shapes] == [2250, 750], shapes
    new = shapes[1]
    # its first 32 launches timed one by one (FIKIT_SAMPLE=1), before anything went lean again
    assert new["dur_us"]["n"] >= 32, new["dur_us"]
    # lean before the new shape, and again once it had settled: neither stretch alone reaches this
    assert 1500 < _lean(st) < 3000 - 64, st["domains"]


def test_forked_child_digests_its_own_records(run_client: RunClient) -> None:
    run = run_client(["--kernels", "conv", "-n", "2000", "--prefork", "2000", "--fork", "--sync", "stream"],
                     env={"FAKECUDA_DURATIONS": "conv=10", **LEAN})
    for pid in run.stats:
        assert_counts_match(run, pid)
    assert all(_lean(st) > 1000 for st in run.stats.values()), {p: s["domains"] for p, s in run.stats.items()}
