#!/usr/bin/env python3
"""The library's measuring cost per launch in a launch-bound Python program, on the fake driver.

overhead_probe.py's toggle variant measures this on the GPU hosts (measuring on over off inside
one process), where a 1% change needs many generations of processes to resolve.  This is its
stand-in on any machine: a Python loop launches zero-length kernels of several ids through
ctypes, churning memory and running interpreter code between launches as a model's host code
does, and turns the library's measuring off and on every few requests (fikit_set_measuring).  The
difference of the two halves' median request time, per launch, is what measuring costs a launch
in a program whose caches are not the library's alone; an HP alone in a self-granting domain.
It proves nothing about a GPU, but splits the library's cost quickly: a build with one part taken
out (say, the clock read) shows that part's share.

    python3 bench/launch_proxy.py --lib build/dev/interpose/libfikit.so [--lib OTHER ...] [--json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import launch_lines
import verify_daemon


def worker(seconds: float, kernels: int, per_request: int, churn_kb: int, every: int) -> dict[str, Any]:
    """In the preloaded child: alternate stretches of `every` requests with measuring off and on."""
    sys.path.insert(0, str(verify_daemon.FAKE_SRC))
    from workload import Device  # tests/fakecuda/workload.py

    cu = ctypes.CDLL("libcuda.so.1")
    if cu.cuInit(0) != 0:
        raise SystemExit("launch_proxy: cuInit failed")
    dev = Device(cu, 0, [(f"proxy_k{i}".encode(), 0.0) for i in range(kernels)])
    launch = cu.cuLaunchKernel
    launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    sync = cu.cuStreamSynchronize
    sync.argtypes = [ctypes.c_void_p]
    set_measuring = ctypes.CDLL(None).fikit_set_measuring
    set_measuring.argtypes = [ctypes.c_int]
    funcs = [f for f, _ in dev.funcs]
    buf = bytearray(churn_kb * 1024)
    rows = [list(range(64)) for _ in range(512)]

    def request() -> None:
        for i in range(per_request):
            for off in range((i * 4096) % len(buf), len(buf), 4096 * 8):  # the host code's memory
                buf[off] = (buf[off] + 1) & 255
            sum(rows[i % 512][:16])
            launch(funcs[i % kernels], 1 + i % 3, 1, 1, 32, 1, 1, 0, dev.stream, None, None)
        sync(dev.stream)

    for _ in range(max(1, 400 * kernels // per_request)):  # every kernel settles (392 launches)
        request()
    halves: dict[int, list[int]] = {0: [], 1: []}
    state, end = 1, time.monotonic() + seconds
    while time.monotonic() < end:
        state ^= 1
        set_measuring(state)
        for _ in range(every):
            t = time.perf_counter_ns()
            request()
            halves[state].append(time.perf_counter_ns() - t)
    on, off = statistics.median(halves[1]), statistics.median(halves[0])
    return {"requests_on": len(halves[1]), "requests_off": len(halves[0]), "on_us": on / 1e3,
            "off_us": off / 1e3, "ratio": on / off, "ns_per_launch": (on - off) / per_request}


def run(lib: Path, a: argparse.Namespace, work: Path, tag: str) -> dict[str, Any]:
    """One library: a child process with it preloaded, HP alone in a self-granting domain."""
    env = launch_lines.hp_alone_env(lib, work, tag)
    cmd = [sys.executable, __file__, "--worker", "--seconds", str(a.seconds), "--kernels", str(a.kernels),
           "--per-request", str(a.per_request), "--churn-kb", str(a.churn_kb), "--every", str(a.every)]
    if a.cpu is not None:
        cmd = ["taskset", "-c", str(a.cpu), *cmd]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise SystemExit(f"launch_proxy: the worker for {lib} failed:\n{p.stderr[-2000:]}")
    return {"lib": str(lib), **json.loads(p.stdout.splitlines()[-1])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lib", action="append", default=[], help="a libfikit.so (repeat to compare, in turn)")
    p.add_argument("--rounds", type=int, default=2, help="each library this many times, alternating")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    p.add_argument("--kernels", type=int, default=20, help="kernel ids launched in turn")
    p.add_argument("--per-request", type=int, default=200, help="launches per request")
    p.add_argument("--churn-kb", type=int, default=256, help="memory the host code touches between launches")
    p.add_argument("--every", type=int, default=10, help="requests per stretch of measuring on or off")
    p.add_argument("--cpu", type=int, default=None, help="pin the worker to this CPU")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.seconds, a.kernels, a.per_request, a.churn_kb, a.every)))
        return 0
    if not a.lib:
        p.error("give a --lib")
    results = []
    with tempfile.TemporaryDirectory(prefix="fikit-proxy-") as tmp:
        for r in range(a.rounds):
            for i, lib in enumerate(a.lib):
                results.append({"round": r, **run(Path(lib).resolve(), a, Path(tmp), f"{r}-{i}")})
                if not a.json:
                    x = results[-1]
                    print(f"{x['lib']}: on {x['on_us']:.1f} us, off {x['off_us']:.1f} us a request, "
                          f"x{x['ratio']:.4f}, {x['ns_per_launch']:.0f} ns a launch", flush=True)
    if a.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
