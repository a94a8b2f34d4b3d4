"""Counting must be exact under threads and across fork.

The hot path keeps per-kernel state without a system call; a lost update under contention would skew
the measurements the scheduler trusts, and a forked worker (DataLoader, multiprocessing) is a new
client that must report its own launches, not its parent's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from fakecuda_harness import API_NAMES, assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import Run, RunClient

FAST = {"FAKECUDA_DURATIONS": "*=0,graph=0"}


def launching_threads(run: Run) -> list[str]:
    return [d["launching_threads"] for d in run.stats[run.pid]["domains"]]


def test_eight_threads_exact_counts(run_client: RunClient) -> None:
    """Eight threads at once: the first counts alone, the second switches the device to locked adds
    while the first may be mid-count, and nothing is lost."""
    run = run_client(["--threads", "8", "-n", "20000", "--kernels", "inc", "--check"], env=FAST)
    assert run.report["launches"]["cuLaunchKernel"] == 160000
    assert_counts_match(run)
    assert launching_threads(run) == ["several"]


def test_one_launching_thread_counts_without_a_lock(run_client: RunClient) -> None:
    """The common case (a serving thread): its counts take no locked add, a full barrier at every
    launch, and stay exact."""
    run = run_client(["-n", "5000", "--kernels", "inc,a,b", "--api", "all", "--check"], env=FAST)
    assert_counts_match(run)
    assert launching_threads(run) == ["one"]


def test_threads_after_one_thread_alone_count_exactly(run_client: RunClient) -> None:
    """One thread launches alone first (its counts plain), then four more: every count still exact."""
    run = run_client(["--prefork", "3000", "--threads", "4", "-n", "3000", "--kernels", "inc,a", "--check"],
                     env=FAST)
    assert run.report["launches"]["cuLaunchKernel"] == 3000 + 4 * 3000
    assert_counts_match(run)
    assert launching_threads(run) == ["several"]


@pytest.mark.parametrize("variant", [
    ["--mode", "procaddr_self", "--ptsz", "--api", "all"],
    ["--mode", "dlsym", "--stream", "created", "--api", "all"],
    ["--mode", "procaddr", "--api", "ex", "--sync", "event"],
], ids=["ptsz-all", "streams-all", "ex-event-sync"])
def test_threads_many_kernels(run_client: RunClient, variant: list[str]) -> None:
    run = run_client([*variant, "--threads", "8", "-n", "2000", "--kernels", "inc,a,b,c,d,e,f", "--check"],
                     env=FAST)
    assert_counts_match(run)


@pytest.mark.parametrize("profile", [False, True], ids=["sampled", "profile"])
def test_threads_measuring(run_client: RunClient, profile: bool) -> None:
    """Measurement state (events, rings) shared by threads launching the same kernels."""
    env = {"FAKECUDA_DURATIONS": "conv=20,gemm=10"}
    if profile:
        env["FIKIT_PROFILE"] = "1"
    run = run_client(["--threads", "4", "-n", "300", "--kernels", "conv,gemm,inc", "--api", "all", "--check"],
                     env=env)
    assert_counts_match(run)


@pytest.mark.parametrize("threads", [1, 3])
def test_fork_child_keeps_launching(run_client: RunClient, threads: int) -> None:
    run = run_client(["--fork", "--prefork", "25", "--threads", str(threads), "-n", "500", "--api", "all",
                      "--kernels", "inc,conv", "--check"], env=FAST)
    parent = run.report
    children = [r for r in run.reports if r["child"] == -1]
    assert len(children) == 1, run.describe()
    child = children[0]
    assert parent["child"] == child["pid"]
    assert child["check"] is True and parent["check"] is True
    # The parent made the pre-fork launches too; the child only its own.
    for api in API_NAMES:
        assert parent["launches"][api] == 25 + 500 * threads
        assert child["launches"][api] == 500 * threads
    assert set(run.stats) == {parent["pid"], child["pid"]}, f"stats files: {sorted(run.stats)}"
    assert_counts_match(run, parent["pid"])
    assert_counts_match(run, child["pid"])


def test_fork_before_any_launch(run_client: RunClient) -> None:
    run = run_client(["--fork", "-n", "300", "--kernels", "inc", "--check"], env=FAST)
    for r in run.reports:
        assert_counts_match(run, r["pid"])
    assert len(run.stats) == 2
