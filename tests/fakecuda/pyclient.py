"""A CUDA driver client in Python, through ctypes.

Python frameworks reach the driver through dlopen + dlsym (ctypes.CDLL) or
through cuGetProcAddress from Python bindings, inside an interpreter whose
argv[0] is "python"; libfikit.so has to see those launches too and name the
program after the script.  Prints one JSON line like the C client.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from collections.abc import Callable
from typing import Any

CUDA_SUCCESS = 0
PER_THREAD_FLAG = 2  # CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
APIS = ("cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch")
STREAM_FUNCS = {"cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch",
                "cuStreamSynchronize"}
# base name -> exported symbol, for the dlsym path
EXPORTED = {
    "cuMemAlloc": "cuMemAlloc_v2",
    "cuMemcpyHtoD": "cuMemcpyHtoD_v2",
    "cuMemcpyDtoH": "cuMemcpyDtoH_v2",
    "cuGraphInstantiate": "cuGraphInstantiateWithFlags",
}

u32 = ctypes.c_uint
vp = ctypes.c_void_p
GPA_V2 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(vp), ctypes.c_int,
                          ctypes.c_uint64, ctypes.POINTER(ctypes.c_int))


class LaunchConfig(ctypes.Structure):
    """CUlaunchConfig as fikit_cuda.h declares it."""

    _fields_ = [
        ("gridDimX", u32), ("gridDimY", u32), ("gridDimZ", u32),
        ("blockDimX", u32), ("blockDimY", u32), ("blockDimZ", u32),
        ("sharedMemBytes", u32), ("hStream", vp), ("attrs", vp), ("numAttrs", u32),
    ]


class Driver:
    """Driver entry points found by one resolution path, called as name(*args) -> CUresult."""

    def __init__(self, mode: str, ptsz: bool, version: int) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.mode = mode
        self.ptsz = ptsz
        self.version = version
        self.gpa: Callable[..., int] | None = None
        if mode in ("procaddr", "procaddr_self"):
            gpa = GPA_V2(("cuGetProcAddress_v2", self.lib))
            if mode == "procaddr_self":
                p = vp()
                st = ctypes.c_int(-1)
                rc = gpa(b"cuGetProcAddress", ctypes.byref(p), version, 0, ctypes.byref(st))
                if rc != CUDA_SUCCESS or not p.value or st.value != 0:
                    raise SystemExit(f"pyclient: cuGetProcAddress(cuGetProcAddress) = {rc}/{st.value}")
                gpa = GPA_V2(p.value)
            self.gpa = gpa
        elif mode != "dlsym":
            raise SystemExit(f"pyclient: unknown mode {mode}")
        self.cache: dict[str, Callable[..., int]] = {}

    def fn(self, base: str) -> Callable[..., int]:
        """Resolve once; every argument is passed as a ctypes object, so one prototype fits all."""
        if base in self.cache:
            return self.cache[base]
        per_thread = self.ptsz and base in STREAM_FUNCS
        proto = ctypes.CFUNCTYPE(ctypes.c_int)
        if self.gpa is None:
            sym = EXPORTED.get(base, base) + ("_ptsz" if per_thread else "")
            f: Callable[..., int] = getattr(self.lib, sym)
            f.restype = ctypes.c_int  # type: ignore[attr-defined]
        else:
            p = vp()
            st = ctypes.c_int(-1)
            flags = PER_THREAD_FLAG if per_thread else 0
            rc = self.gpa(base.encode(), ctypes.byref(p), self.version, flags, ctypes.byref(st))
            if rc != CUDA_SUCCESS or not p.value:
                raise SystemExit(f"pyclient: cuGetProcAddress({base}) = {rc}")
            f = proto(p.value)
        self.cache[base] = f
        return f

    def __call__(self, base: str, *args: Any) -> None:
        rc = self.fn(base)(*args)
        if rc != CUDA_SUCCESS:
            raise SystemExit(f"pyclient: {base} failed: {rc}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="dlsym", choices=["dlsym", "procaddr", "procaddr_self"])
    ap.add_argument("--ptsz", action="store_true")
    ap.add_argument("--api", default="kernel", choices=["kernel", "ex", "coop", "graph", "all"])
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--kernels", default="k")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--version", type=int, default=13000)
    a = ap.parse_args()

    apis = list(APIS) if a.api == "all" else [
        {"kernel": "cuLaunchKernel", "ex": "cuLaunchKernelEx", "coop": "cuLaunchCooperativeKernel",
         "graph": "cuGraphLaunch"}[a.api]]
    names = a.kernels.split(",")
    d = Driver(a.mode, a.ptsz, a.version)
    d("cuInit", u32(0))
    dev = ctypes.c_int()
    d("cuDeviceGet", ctypes.byref(dev), ctypes.c_int(0))
    ctx = vp()
    d("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
    d("cuCtxSetCurrent", ctx)
    mod = vp()
    d("cuModuleLoadData", ctypes.byref(mod), ctypes.c_char_p("\n".join(names).encode()))
    funcs = []
    for name in names:
        f = vp()
        d("cuModuleGetFunction", ctypes.byref(f), mod, ctypes.c_char_p(name.encode()))
        funcs.append(f)
    counter = ctypes.c_uint64()
    d("cuMemAlloc", ctypes.byref(counter), ctypes.c_size_t(8))
    zero = ctypes.c_int64(0)
    d("cuMemcpyHtoD", counter, ctypes.byref(zero), ctypes.c_size_t(8))
    exe = vp()
    if "cuGraphLaunch" in apis:
        graph = vp()
        d("cuGraphCreate", ctypes.byref(graph), u32(0))
        d("cuGraphInstantiate", ctypes.byref(exe), graph, ctypes.c_ulonglong(0))

    stream = vp(None)
    arg0 = ctypes.c_uint64(counter.value)
    params = (vp * 1)(ctypes.cast(ctypes.byref(arg0), vp))
    one = u32(1)
    done = dict.fromkeys(APIS, 0)
    per_kernel = dict.fromkeys(names, 0)
    expected = 0
    for i in range(a.n):
        k = i % len(names)
        for api in apis:
            if api == "cuLaunchKernel":
                d(api, funcs[k], one, one, one, u32(32), one, one, u32(0), stream, params, vp(None))
            elif api == "cuLaunchCooperativeKernel":
                d(api, funcs[k], one, one, one, u32(32), one, one, u32(0), stream, params)
            elif api == "cuLaunchKernelEx":
                cfg = LaunchConfig(1, 1, 1, 32, 1, 1, 0, None, None, 0)
                d(api, ctypes.byref(cfg), funcs[k], params, vp(None))
            else:
                d(api, exe, stream)
            done[api] += 1
            if api != "cuGraphLaunch":
                per_kernel[names[k]] += 1
                expected += names[k].startswith("inc")
    d("cuStreamSynchronize", stream)
    value = ctypes.c_int64(-1)
    d("cuMemcpyDtoH", ctypes.byref(value), counter, ctypes.c_size_t(8))
    check_ok = value.value == expected
    if a.check and not check_ok:
        print(f"pyclient: check failed: {value.value} != {expected}", file=sys.stderr)
    print(json.dumps({"pid": os.getpid(), "child": 0, "ok": True, "check": check_ok if a.check else None,
                      "launches": done, "kernels": {n: c for n, c in per_kernel.items() if c}}))
    return 0 if check_ok or not a.check else 1


if __name__ == "__main__":
    sys.exit(main())
