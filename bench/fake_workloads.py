"""Stand-ins for bench/workloads.py on a machine without a GPU: kernels on tests/fakecuda's driver.

For CPU rehearsals of the GPU scripts (bench/verify_multigpu.py --fake): a worker started with
`--device fake` builds no model and imports no torch; each step launches a few fake kernels whose
durations the fake driver takes from FAKECUDA_DURATIONS (FAKE_DURATIONS below, which the runner
sets), on one timeline per device shared by every process (FAKECUDA_TIMELINE). The same interface
as workloads.build_devices, so bench/worker.py runs either.
"""

from __future__ import annotations

import ctypes
import sys
import time
from pathlib import Path
from typing import Any

from workloads_catalog import CATALOG

FAKE_SRC = Path(__file__).resolve().parents[1] / "tests" / "fakecuda"
if str(FAKE_SRC) not in sys.path:
    sys.path.append(str(FAKE_SRC))

from workload import Device  # noqa: E402 - tests/fakecuda/workload.py: a context, module and stream

# An HP request: a 3 ms kernel, 3 ms on the host (the request's CPU part: a gap LP work can fill),
# a 1 ms kernel (then the worker syncs); an LP iteration: two 1 ms kernels.
PLANS = {"hp": [(b"hp_conv", 0.003), (b"hp_fc", 0.0)], "lp": [(b"lp_small", 0.0), (b"lp_small", 0.0)]}
FAKE_DURATIONS = "hp_conv=3000,hp_fc=1000,lp_small=1000,*=500"


class Workload:
    """What bench/worker.py uses of workloads.Workload."""

    def __init__(self, name: str, ordinals: list[int]) -> None:
        if name not in CATALOG:
            raise KeyError(f"unknown workload {name!r}; known: {', '.join(sorted(CATALOG))}")
        self.name = name
        self.role, batch, desc = CATALOG[name]
        self.batch = batch * len(ordinals)
        self.description = f"fake kernels standing in for {desc}, on fake devices {ordinals}"
        self.info: dict[str, Any] = {"fake": True, "devices": ordinals}
        cu = ctypes.CDLL("libcuda.so.1")
        if cu.cuInit(0) != 0:
            raise RuntimeError("fake driver: cuInit failed")
        self.devices = [Device(cu, i, PLANS[self.role]) for i in ordinals]
        self.launch = cu.cuLaunchKernel
        self.launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
        self.stream_sync = cu.cuStreamSynchronize
        self.stream_sync.argtypes = [ctypes.c_void_p]

    def step(self) -> None:
        for d in self.devices:
            d.make_current()
            for f, gap in d.funcs:
                if self.launch(f, 1, 1, 1, 32, 1, 1, 0, d.stream, None, None) != 0:
                    raise RuntimeError(f"fake driver: launch on device {d.ordinal} failed")
                if gap:  # the host's part: wait for the kernel, then compute
                    self.stream_sync(d.stream)
                    time.sleep(gap)

    def sync(self) -> None:
        for d in self.devices:
            if self.stream_sync(d.stream) != 0:
                raise RuntimeError(f"fake driver: sync on device {d.ordinal} failed")


def build_devices(
    name: str, device: str, ordinals: list[int] | None, tiny: bool = False, batch: int | None = None
) -> Workload:
    del device, tiny, batch  # one shape of fake work per role
    return Workload(name, ordinals or [0])


def set_threads_from_affinity() -> int:
    return 1


def setup_determinism(seed: int = 0) -> None:
    del seed
