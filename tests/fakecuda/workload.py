"""A trace-driven CUDA client for the scheduling tests, through ctypes on the fake driver.

Each iteration launches the listed kernels in order; after each kernel it
waits for it (cuStreamSynchronize, as a request loop does) and then spends
the kernel's gap on the host.  Durations are the fake driver's
(FAKECUDA_DURATIONS by kernel name), so the whole run is simulated GPU time
on a timeline shared with the other clients (FAKECUDA_TIMELINE).

    workload.py --kernels conv:4000,fc:1000 --repeat 50 [--until FILE] [--progress FILE]

--kernels NAME:GAP_US,...  kernels of one iteration and the host gap after each
--repeat N                 iterations (0: until --until exists or --seconds pass)
--progress FILE            append "<monotonic_ns> <kernels done on that device> <device>" after every kernel
--no-sync                  queue a whole iteration, then wait (a training step's shape)
--rest-us N                host time after each iteration's wait (a request loop's time between requests)
--quiet-off-at N           after N iterations, fikit_set_quiet(0) (libfikit.so preloaded)
--devices 0,1              run the plan on each device at once, a thread and a context per device
Prints one JSON line: {"iterations", "kernels", "elapsed_s", "iter_s": [...], "by_device": {...}}
(iterations and iter_s of the first device; kernels of all).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time


def fake_uuid(device: int) -> str:
    """The uuid the fake driver gives host device N (fakecuda.c, host_uuid), as NVML would print it."""
    return f"GPU-facec0da-0000-4000-8000-{device:012x}"


def check(r: int, what: str) -> None:
    if r != 0:
        print(f"workload: {what} failed with CUresult {r}", file=sys.stderr)
        raise SystemExit(1)


class Device:
    """One device's context, module, functions and stream, made current in the calling thread."""

    def __init__(self, cu: ctypes.CDLL, ordinal: int, plan: list[tuple[bytes, float]]) -> None:
        self.cu = cu
        self.ordinal = ordinal
        dev = ctypes.c_int()
        check(cu.cuDeviceGet(ctypes.byref(dev), ordinal), f"cuDeviceGet({ordinal})")
        self.ctx = ctypes.c_void_p()
        check(cu.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), dev), "cuDevicePrimaryCtxRetain")
        self.make_current()
        mod = ctypes.c_void_p()
        image = b"\n".join(n for n, _ in plan) + b"\0"
        check(cu.cuModuleLoadData(ctypes.byref(mod), image), "cuModuleLoadData")
        self.funcs = []
        for name, gap in plan:
            f = ctypes.c_void_p()
            check(cu.cuModuleGetFunction(ctypes.byref(f), mod, name), "cuModuleGetFunction")
            self.funcs.append((f, gap))
        self.stream = ctypes.c_void_p()
        check(cu.cuStreamCreate(ctypes.byref(self.stream), 0), "cuStreamCreate")
        self.iters: list[float] = []
        self.done = 0

    def make_current(self) -> None:
        check(self.cu.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--until", default="")
    ap.add_argument("--progress", default="")
    ap.add_argument("--ready", default="", help="touch this file once initialised")
    ap.add_argument("--no-sync", action="store_true", help="wait only at the end of each iteration")
    ap.add_argument("--rest-us", type=int, default=0, help="host time after each iteration's wait")
    ap.add_argument("--quiet-off-at", type=int, default=-1,
                    help="fikit_set_quiet(0) after this many iterations")
    ap.add_argument("--devices", default="0",
                    help="device ordinals, e.g. 0,1: the plan runs on each at once, one thread per device")
    a = ap.parse_args()
    plan = []
    for item in a.kernels.split(","):
        name, gap = item.split(":")
        plan.append((name.encode(), int(gap) / 1e6))

    cu = ctypes.CDLL("libcuda.so.1")
    check(cu.cuInit(0), "cuInit")
    devices = [Device(cu, int(d), plan) for d in a.devices.split(",")]
    launch = cu.cuLaunchKernel
    launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    sync = cu.cuStreamSynchronize
    sync.argtypes = [ctypes.c_void_p]

    prog = open(a.progress, "a", buffering=1) if a.progress else None  # noqa: SIM115 - closed at exit
    lock = threading.Lock()
    if a.ready:
        open(a.ready, "w").close()
    t0 = time.monotonic()

    def run(d: Device) -> None:
        """The plan on one device (ctypes calls release the GIL: a held launch holds this thread only)."""
        d.make_current()
        while True:
            if a.repeat and len(d.iters) >= a.repeat:
                break
            if not a.repeat and (time.monotonic() - t0 > a.seconds or (a.until and os.path.exists(a.until))):
                break
            ti = time.monotonic()
            for f, gap in d.funcs:
                check(launch(f, 1, 1, 1, 32, 1, 1, 0, d.stream, None, None), "cuLaunchKernel")
                if not a.no_sync:
                    check(sync(d.stream), "cuStreamSynchronize")
                d.done += 1
                if prog:
                    with lock:
                        prog.write(f"{time.monotonic_ns()} {d.done} {d.ordinal}\n")
                if gap:
                    time.sleep(gap)
            if a.no_sync:
                check(sync(d.stream), "cuStreamSynchronize")
            d.iters.append(time.monotonic() - ti)
            if len(d.iters) == a.quiet_off_at:
                ctypes.CDLL(None).fikit_set_quiet(0)
            if a.rest_us:
                time.sleep(a.rest_us / 1e6)

    if len(devices) == 1:
        run(devices[0])
    else:
        threads = [threading.Thread(target=run, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    first = devices[0]
    by_device = {str(d.ordinal): {"kernels": d.done, "iter_s": d.iters} for d in devices}
    print(json.dumps({"iterations": len(first.iters), "kernels": sum(d.done for d in devices),
                      "elapsed_s": time.monotonic() - t0, "iter_s": first.iters, "by_device": by_device}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
