"""A trace-driven CUDA client for the scheduling tests, through ctypes on the fake driver.

Each iteration launches the listed kernels in order; after each kernel it
waits for it (cuStreamSynchronize, as a request loop does) and then spends
the kernel's gap on the host.  Durations are the fake driver's
(FAKECUDA_DURATIONS by kernel name), so the whole run is simulated GPU time
on a timeline shared with the other clients (FAKECUDA_TIMELINE).

    workload.py --kernels conv:4000,fc:1000 --repeat 50 [--until FILE] [--progress FILE]

--kernels NAME:GAP_US,...  kernels of one iteration and the host gap after each
--repeat N                 iterations (0: until --until exists or --seconds pass)
--progress FILE            append "<monotonic_ns> <kernels done>" after every kernel
--no-sync                  queue a whole iteration, then wait (a training step's shape)
Prints one JSON line: {"iterations", "kernels", "elapsed_s", "iter_s": [...]}.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time


def check(r: int, what: str) -> None:
    if r != 0:
        print(f"workload: {what} failed with CUresult {r}", file=sys.stderr)
        raise SystemExit(1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--until", default="")
    ap.add_argument("--progress", default="")
    ap.add_argument("--ready", default="", help="touch this file once initialised")
    ap.add_argument("--no-sync", action="store_true", help="wait only at the end of each iteration")
    a = ap.parse_args()
    plan = []
    for item in a.kernels.split(","):
        name, gap = item.split(":")
        plan.append((name.encode(), int(gap) / 1e6))

    cu = ctypes.CDLL("libcuda.so.1")
    check(cu.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    check(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    mod = ctypes.c_void_p()
    image = b"\n".join(n for n, _ in plan) + b"\0"
    check(cu.cuModuleLoadData(ctypes.byref(mod), image), "cuModuleLoadData")
    funcs = []
    for name, gap in plan:
        f = ctypes.c_void_p()
        check(cu.cuModuleGetFunction(ctypes.byref(f), mod, name), "cuModuleGetFunction")
        funcs.append((f, gap))
    stream = ctypes.c_void_p()
    check(cu.cuStreamCreate(ctypes.byref(stream), 0), "cuStreamCreate")
    launch = cu.cuLaunchKernel
    launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    sync = cu.cuStreamSynchronize
    sync.argtypes = [ctypes.c_void_p]

    prog = open(a.progress, "a", buffering=1) if a.progress else None  # noqa: SIM115 - closed at exit
    if a.ready:
        open(a.ready, "w").close()
    t0 = time.monotonic()
    iters: list[float] = []
    done = 0
    while True:
        if a.repeat and len(iters) >= a.repeat:
            break
        if not a.repeat and (time.monotonic() - t0 > a.seconds or (a.until and os.path.exists(a.until))):
            break
        ti = time.monotonic()
        for f, gap in funcs:
            check(launch(f, 1, 1, 1, 32, 1, 1, 0, stream, None, None), "cuLaunchKernel")
            if not a.no_sync:
                check(sync(stream), "cuStreamSynchronize")
            done += 1
            if prog:
                prog.write(f"{time.monotonic_ns()} {done}\n")
            if gap:
                time.sleep(gap)
        if a.no_sync:
            check(sync(stream), "cuStreamSynchronize")
        iters.append(time.monotonic() - ti)
    print(json.dumps({"iterations": len(iters), "kernels": done, "elapsed_s": time.monotonic() - t0,
                      "iter_s": iters}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
