"""Profiling mode (FIKIT_PROFILE=1) times kernels with CUPTI's activity records, exactly.

On a real GPU an event pair around a launch reads the front end's setup of the launch as kernel time
(on the H100, 2-7 us too long for kernels of 1-3 us); CUPTI's kernel records carry the kernel's own
start and end, as the PyTorch profiler reports them. Here the fake driver models that setup
(FAKECUDA_LAUNCH_LATENCY_US: work on an idle stream starts that long after it is submitted, while an
event there completes at once) and the fake CUPTI (tests/fakecuda/fakecupti.c, found as
libcupti.so.13 on LD_LIBRARY_PATH) hands out records of the fake timeline: the library's durations
must equal the simulated ones to the nanosecond, every launch timed once, graph replays and co-running
kernels left out, and anything wrong with CUPTI must leave the program and its counts untouched.
"""

from __future__ import annotations

import site
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fakecuda_harness import assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import FakeBuild, Run, RunClient

LATENCY_US = "5"  # the fake front end's setup of a launch on an idle stream
PROFILE = {"FIKIT_PROFILE": "1", "FAKECUDA_LAUNCH_LATENCY_US": LATENCY_US}


def _kernels(run: Run) -> dict[str, dict[str, Any]]:
    return {k["name"]: k for k in run.stats[run.pid]["kernels"]}


def _assert_exact(kernel: dict[str, Any], us: float) -> None:
    """Every launch timed once, each at exactly the simulated duration (FIKIT_STATS has ns resolution)."""
    dur = kernel["dur_us"]
    assert dur is not None, kernel
    assert dur["n"] == kernel["count"], f"{kernel['name']}: {dur['n']} of {kernel['count']} launches timed"
    for q in ("mean", "p50", "p99"):
        assert dur[q] == pytest.approx(us, abs=0.0005), f"{kernel['name']}: {q} {dur[q]} µs, ran {us} µs"


@pytest.mark.parametrize("variant", [
    ["--api", "all", "--sync", "stream"],
    ["--api", "all"],
    ["--api", "kernel", "--threads", "4", "--stream", "created"],
    ["--api", "ex", "--ptsz", "--mode", "procaddr_self", "--sync", "ctx"],
], ids=["all-idle-streams", "all-queued", "threads-streams", "ptsz-ex"])
def test_durations_are_the_simulated_ones(run_client: RunClient, variant: list[str]) -> None:
    env = {**PROFILE, "FAKECUDA_DURATIONS": "conv=2,gemm=40,graph=150,*=10"}
    run = run_client([*variant, "-n", "120", "--kernels", "conv,gemm,k_param,inc", "--param-us", "77",
                      "--check"], env=env)
    assert_counts_match(run)
    stats = run.stats[run.pid]
    assert stats["timing"] == "cupti", run.describe()
    kernels = _kernels(run)
    for name, us in {"conv": 2, "gemm": 40, "k_param": 77, "inc": 10}.items():
        _assert_exact(kernels[name], us)
    c = stats["cupti"]
    launched = sum(k["count"] for k in stats["kernels"])
    assert c["records"] == c["timed"] == launched, c
    assert c["unmatched"] == c["incomplete"] == c["dropped"] == c["graph"] == 0, c
    assert run.truth[run.pid]["cupti_records"] == c["records"]
    assert not run.fikit_lines(), run.stderr


def test_idle_stream_events_over_read_cupti_does_not(run_client: RunClient) -> None:
    """The H100's symptom, and its cure: a 2 µs kernel launched on an idle stream reads 2 µs plus the
    front end's setup by events (the sampled mode), exactly 2 µs by CUPTI (profiling mode)."""
    args = ["--api", "kernel", "--kernels", "conv", "-n", "60", "--sync", "stream"]
    env = {"FAKECUDA_DURATIONS": "conv=2", "FAKECUDA_LAUNCH_LATENCY_US": LATENCY_US}
    sampled = run_client(args, env=env)
    assert sampled.stats[sampled.pid]["timing"] == "events"
    over_read = _kernels(sampled)["conv"]["dur_us"]["p50"]
    assert over_read >= 2 + float(LATENCY_US), f"the fake no longer over-reads: {over_read} µs"
    profiled = run_client(args, env={**env, "FIKIT_PROFILE": "1"})
    _assert_exact(_kernels(profiled)["conv"], 2)
    # No event sample was taken: on these idle streams every one would have been gated.
    assert sampled.truth[sampled.pid]["wait_value"] > 0
    assert profiled.truth[profiled.pid]["wait_value"] == 0


def test_graph_replays_are_not_counted_as_their_kernels(run_client: RunClient) -> None:
    """CUPTI reports the kernels inside a replayed graph; the library times the graph launch by events
    (as in every mode) and leaves its kernels' records out: conv, launched directly and inside the graph
    with the same shape, is timed once per direct launch."""
    env = {**PROFILE, "FAKECUDA_DURATIONS": "conv=3,graph=150", "FAKECUDA_GRAPH_KERNEL": "conv"}
    run = run_client(["--api", "all", "-n", "80", "--kernels", "conv"], env=env)
    assert_counts_match(run)
    stats = run.stats[run.pid]
    _assert_exact(_kernels(run)["conv"], 3)  # 240 direct launches (three APIs), 240 timed
    graph = stats["graphs"][0]
    assert graph["dur_us"]["n"] == graph["count"] == 80, graph
    assert graph["dur_us"]["p50"] == pytest.approx(150, rel=0.1), graph
    c = stats["cupti"]
    assert c["graph"] == 80 and c["timed"] == 240 and c["records"] == 320, c
    assert run.truth[run.pid]["cupti_records"] == 320


def test_explicit_cupti_path(run_client: RunClient, fake_build: FakeBuild) -> None:
    run = run_client(["--kernels", "conv", "-n", "30"],
                     env={**PROFILE, "FAKECUDA_DURATIONS": "conv=4",
                          "FIKIT_CUPTI": str(fake_build.fake_dir / "libcupti.so.13")})
    assert run.stats[run.pid]["timing"] == "cupti"
    _assert_exact(_kernels(run)["conv"], 4)


@pytest.mark.parametrize(("broken", "why"), [
    ({"FIKIT_CUPTI": "/nonexistent/libcupti.so.13"}, "cannot load FIKIT_CUPTI=/nonexistent/libcupti.so.13"),
    ({"FAKECUDA_CUPTI_FAIL": "cuptiSubscribe"}, "another tool holds CUPTI"),
    ({"FAKECUDA_CUPTI_FAIL": "cuptiActivityRegisterCallbacks"}, "cuptiActivityRegisterCallbacks"),
    ({"FAKECUDA_CUPTI_FAIL": "cuptiActivityEnable"}, "cuptiActivityEnable"),
    ({"FAKECUDA_CUPTI_VERSION": "18"}, "CUPTI API version 18"),
], ids=["missing-file", "held-by-another-tool", "register-fails", "enable-fails", "too-old"])
def test_without_cupti_events_time_kernels(run_client: RunClient, broken: dict[str, str], why: str) -> None:
    """Fail-open: one line on stderr, then profiling mode as it was before CUPTI (every launch timed by
    an event pair), the program's results and the counts untouched."""
    env = {**PROFILE, **broken, "FAKECUDA_DURATIONS": "conv=120,gemm=40,*=10"}
    run = run_client(["--api", "all", "-n", "60", "--kernels", "conv,gemm,inc", "--check"], env=env)
    assert run.report["check"] is True
    assert_counts_match(run)
    lines = run.fikit_lines()
    assert len(lines) == 1 and "CUPTI unavailable" in lines[0] and why in lines[0], lines
    stats = run.stats[run.pid]
    assert stats["timing"] == "events" and stats["cupti"] is None, stats
    for k in stats["kernels"]:
        assert k["dur_us"]["n"] == k["count"], k
    assert abs(_kernels(run)["conv"]["dur_us"]["p50"] - 120) <= 12
    assert run.truth[run.pid]["cupti_records"] == 0


def test_a_forked_child_times_by_events(run_client: RunClient) -> None:
    """CUPTI's threads do not survive fork: the parent keeps CUPTI, the child falls back to events
    quietly (the parent said nothing wrong, and the child's launches are counted and timed)."""
    run = run_client(["--fork", "--prefork", "20", "-n", "100", "--kernels", "inc,conv", "--check"],
                     env={**PROFILE, "FAKECUDA_DURATIONS": "conv=20,*=10"})
    parent = run.report
    child = next(r for r in run.reports if r["child"] == -1)
    assert parent["check"] is True and child["check"] is True
    for pid in (parent["pid"], child["pid"]):
        assert_counts_match(run, pid)
    assert run.stats[parent["pid"]]["timing"] == "cupti"
    assert run.stats[child["pid"]]["timing"] == "events"
    for pid in (parent["pid"], child["pid"]):
        for k in run.stats[pid]["kernels"]:
            assert k["dur_us"]["n"] == k["count"], (pid, k)
    assert not run.fikit_lines(), run.stderr


def _real_cuptis() -> list[Path]:
    """Real libcupti copies on this machine: the toolkit's and Python packages' (nvidia wheels, Triton)."""
    found = [p for p in sorted(Path("/usr/local/cuda/lib64").glob("libcupti.so.1[0-9]"))]
    for sp in sorted({*site.getsitepackages(), site.getusersitepackages()}):
        found += sorted(Path(sp).glob("nvidia/*/lib/libcupti.so.1[0-9]"))
        found += sorted(Path(sp).glob("triton/backends/nvidia/lib/cupti*/libcupti.so.1[0-9]"))
    return found


@pytest.mark.parametrize("cupti", _real_cuptis() or [None], ids=str)
def test_a_real_cupti_loads_and_fails_open_without_a_gpu(run_client: RunClient, cupti: Path | None) -> None:
    """A real libcupti, over the fake driver: every entry point the library uses resolves and the API
    version passes (so the names in fikit_cupti.h are the exported ones); CUPTI then finds no real
    driver, and the library falls back to events with one line, the program untouched."""
    if cupti is None:
        pytest.skip("no real libcupti installed")
    run = run_client(["--api", "all", "-n", "30", "--kernels", "conv,inc", "--check"],
                     env={"FIKIT_PROFILE": "1", "FIKIT_CUPTI": str(cupti), "FAKECUDA_DURATIONS": "conv=20"})
    assert run.report["check"] is True
    assert_counts_match(run)
    lines = run.fikit_lines()
    if run.stats[run.pid]["timing"] == "events":
        assert len(lines) == 1 and "CUPTI unavailable" in lines[0], lines
        for early in ("cannot load", "has no", "or later needed"):
            assert early not in lines[0], f"{cupti}: {lines[0]}"
