"""Every way a program reaches the driver must reach libfikit.so's wrappers.

A launch the library does not see is a launch it cannot measure or hold, and a scheduler with a hole.
PyTorch alone uses three of these paths (the CUDA 13 runtime resolves through cuGetProcAddress obtained
from itself, cuBLAS/cuDNN use cuLaunchKernelEx, graphs replay through cuGraphLaunch), so each path is run
against each launch API, with and without per-thread default streams, and the library's counts are held
to the fake driver's ground truth.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from fakecuda_harness import API_NAMES, assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import RunClient

MODES = ["direct", "dlsym", "procaddr", "procaddr_v1", "procaddr_self"]
APIS = ["kernel", "ex", "coop", "graph", "all"]
KERNELS = "inc,conv_fwd,gemm"


@pytest.mark.parametrize("ptsz", [False, True], ids=["legacy", "ptsz"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", MODES)
def test_every_path_counts_exactly(run_client: RunClient, mode: str, api: str, ptsz: bool) -> None:
    args = ["--mode", mode, "--api", api, "-n", "60", "--kernels", KERNELS, "--check"]
    if ptsz:
        args.append("--ptsz")
    run = run_client(args, client="direct" if mode == "direct" else "client")
    assert run.report["check"] is True
    assert_counts_match(run)


@pytest.mark.parametrize("stream", ["default", "created"])
@pytest.mark.parametrize("load", ["module", "library", "library_kernel"])
def test_loading_and_streams(run_client: RunClient, load: str, stream: str) -> None:
    """Kernels from cuLibrary (the runtime's lazy loading) and CUkernel handles launched as functions."""
    run = run_client(["--mode", "procaddr_self", "--api", "all", "-n", "40", "--kernels", KERNELS,
                      "--load", load, "--stream", stream, "--check"])
    assert_counts_match(run)


@pytest.mark.parametrize("mode", ["dlsym", "procaddr"])
def test_driver_loaded_globally(run_client: RunClient, mode: str) -> None:
    """A driver opened RTLD_GLOBAL is found through the global scope as well as through the handle."""
    run = run_client(["--mode", mode, "--api", "all", "-n", "30", "--dlopen-global", "--check"])
    assert_counts_match(run)


@pytest.mark.parametrize("sync", ["ctx", "stream", "event"])
@pytest.mark.parametrize("mode", MODES)
def test_sync_entry_points(run_client: RunClient, mode: str, sync: str) -> None:
    """Synchronising calls reached by every path (cuCtxSynchronize is the _v2 one at CUDA 13 by name)."""
    run = run_client(["--mode", mode, "--api", "all", "-n", "20", "--kernels", KERNELS, "--sync", sync,
                      "--check"], client="direct" if mode == "direct" else "client")
    assert_counts_match(run)
    assert not run.fikit_lines(), run.describe()


def test_old_runtime_version(run_client: RunClient) -> None:
    """A runtime built for CUDA 11.8 asks for older variants (cuGetProcAddress v1 among them)."""
    run = run_client(["--mode", "procaddr_self", "--version", "11080", "--api", "kernel", "-n", "30",
                      "--check"])
    assert_counts_match(run)


@pytest.mark.parametrize("ptsz", [False, True], ids=["legacy", "ptsz"])
@pytest.mark.parametrize("mode", ["dlsym", "procaddr", "procaddr_self"])
def test_python_ctypes(run_client: RunClient, mode: str, ptsz: bool) -> None:
    args = ["--mode", mode, "--api", "all", "-n", "40", "--kernels", "inc,attn", "--check"]
    if ptsz:
        args.append("--ptsz")
    run = run_client(args, client="python")
    assert_counts_match(run)
    # The profile key of a Python program is its script, not "python3".
    assert run.stats[run.pid].get("prog") == "pyclient.py", run.stats[run.pid].get("prog")


def test_program_name(run_client: RunClient) -> None:
    run = run_client(["-n", "5"])
    assert run.stats[run.pid].get("prog") == "client"
    run = run_client(["-n", "5"], env={"FIKIT_PROG": "trainer"})
    assert run.stats[run.pid].get("prog") == "trainer"


@pytest.mark.parametrize("mode", ["direct", "dlsym", "procaddr_self"])
def test_without_preload_same_results(run_client: RunClient, mode: str) -> None:
    """The library must not change what a program computes: same launches, same results as without it."""
    args = ["--mode", mode, "--api", "all", "-n", "50", "--kernels", KERNELS, "--check"]
    client = "direct" if mode == "direct" else "client"
    plain = run_client(args, preload=False, client=client)
    under = run_client(args, client=client)
    assert plain.stats == {}, "FIKIT_STATS written without the library?"
    for run in (plain, under):
        assert run.report["check"] is True
    truth_plain, truth_under = plain.truth[plain.pid], under.truth[under.pid]
    for key in (*API_NAMES, "kernels"):
        assert truth_plain[key] == truth_under[key], key

    def configs(truth: dict[str, Any]) -> list[str]:
        return sorted(json.dumps(c, sort_keys=True) for c in truth["configs"])

    assert configs(truth_plain) == configs(truth_under)
    assert plain.report["launches"] == under.report["launches"]


@pytest.mark.parametrize("devices", [1, 2])
def test_a_process_of_one_device_asks_no_context_at_each_launch(run_client: RunClient, devices: int) -> None:
    """A launch belongs to the domain of its context's GPU, and asking the driver for the current
    context costs every launch a call into the driver (its code and a thread-local lookup, cold in
    a real program).  A process that sees one device (CUDA_VISIBLE_DEVICES naming one GPU, as
    fikitd starts its jobs) launches on that device whatever its context: it asks only when it
    times a kernel, whose events belong to a context.  With two devices every launch asks."""
    n = 400
    args = ["--api", "all", "-n", str(n), "--kernels", KERNELS, "--check"]
    env = {"FAKECUDA_DEVICES": str(devices)}
    under = run_client(args, env=env)
    plain = run_client(args, env=env, preload=False)
    assert_counts_match(under)
    asked = under.truth[under.pid]["ctx_queries"] - plain.truth[plain.pid]["ctx_queries"]
    launches = sum(under.stats[under.pid]["launches"].values())
    assert launches >= n, under.stats[under.pid]["launches"]
    if devices == 1:  # the timed launches only: each kernel's first 8, then about 1 in 16
        assert 0 < asked < launches // 4, f"{asked} context queries for {launches} launches"
    else:
        assert asked >= launches, f"{asked} context queries for {launches} launches"


# -------------------------------------------------------------------------------------------------
# Kernel identity: the key under which measurements are stored and shared with the daemon.

def _ids(stats: dict[str, object]) -> dict[str, str]:
    kernels = stats["kernels"]
    assert isinstance(kernels, list)
    return {k["name"]: k["id"] for k in kernels}


def test_ids_are_stable_across_runs(run_client: RunClient) -> None:
    args = ["--api", "all", "-n", "20", "--kernels", KERNELS, "--grid", "64,2,1", "--block", "128,1,1"]
    a = run_client(args)
    b = run_client(args)
    ids_a, ids_b = _ids(a.stats[a.pid]), _ids(b.stats[b.pid])
    assert ids_a == ids_b
    assert len(set(ids_a.values())) == len(ids_a), "different kernels share an id"
    for i in ids_a.values():
        assert re.fullmatch(r"[0-9a-f]{16}", i), i
    graphs_a = [g["id"] for g in a.stats[a.pid]["graphs"]]
    graphs_b = [g["id"] for g in b.stats[b.pid]["graphs"]]
    assert graphs_a == graphs_b and len(graphs_a) == 1
    assert re.fullmatch(r"[0-9a-f]{16}", graphs_a[0]), graphs_a


def test_ids_stable_across_resolution_paths(run_client: RunClient) -> None:
    """A kernel is the same kernel however its launch reached the library, and on whichever stream."""
    args = ["--api", "kernel", "-n", "10", "--kernels", KERNELS]
    runs = [run_client([*args, "--mode", "dlsym"]), run_client([*args, "--mode", "procaddr_self", "--ptsz"]),
            run_client([*args, "--mode", "direct", "--stream", "created"], client="direct")]
    ids = [_ids(r.stats[r.pid]) for r in runs]
    assert ids[0] == ids[1] == ids[2]


@pytest.mark.parametrize("change", [
    ["--grid", "65,2,1"], ["--grid", "64,3,1"], ["--block", "256,1,1"], ["--block", "128,2,1"],
    ["--smem", "4096"], ["--kernels", "conv_fwd2"],
])
def test_ids_differ_with_launch_shape(run_client: RunClient, change: list[str]) -> None:
    base = ["--api", "kernel", "-n", "5", "--kernels", "conv_fwd", "--grid", "64,2,1", "--block", "128,1,1"]
    a = run_client(base)
    b = run_client([*base, *change])
    (id_a,) = _ids(a.stats[a.pid]).values()
    (id_b,) = _ids(b.stats[b.pid]).values()
    assert id_a != id_b, f"{change} did not change the kernel id"


def test_two_shapes_in_one_process_are_two_kernels(run_client: RunClient) -> None:
    """One name launched with two block shapes: two ids, each counted on its own."""
    run = run_client(["--api", "all", "-n", "20", "--kernels", "conv_fwd", "--block", "64,1,1",
                      "--vary-block"])
    assert_counts_match(run)
    kernels = run.stats[run.pid]["kernels"]
    assert sorted((k["block"][0], k["count"]) for k in kernels) == [(64, 30), (128, 30)], kernels
    assert len({k["id"] for k in kernels}) == 2
