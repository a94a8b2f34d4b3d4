"""GPUs as NVML sees them; an empty list and a reason on a host without the driver.

A newcomer's laptop and CI have no NVIDIA driver, and the daemon must still start there,
so nothing in this module raises.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

from . import log

LOG = log.get("gpus")


@dataclass
class Gpu:
    index: int
    name: str
    uuid: str
    util_pct: int | None = None
    mem_used: int | None = None
    mem_total: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Nvml:
    def __init__(self) -> None:
        self.reason = ""
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:
            self.reason = f"no NVIDIA driver (NVML: {exc})"

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def count(self) -> int:
        if self._nvml is None:
            return 0
        try:
            return int(self._nvml.nvmlDeviceGetCount())
        except Exception as exc:
            self.reason = f"NVML: {exc}"
            return 0

    def list(self, live: bool = True) -> list[Gpu]:
        """Names and uuids always; utilisation and memory when ``live`` (they cost an ioctl each)."""
        out: list[Gpu] = []
        nv = self._nvml
        for i in range(self.count()):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                name = nv.nvmlDeviceGetName(h)
                uuid = nv.nvmlDeviceGetUUID(h)
                gpu = Gpu(i, name.decode() if isinstance(name, bytes) else str(name),
                          uuid.decode() if isinstance(uuid, bytes) else str(uuid))
                if live:
                    util = nv.nvmlDeviceGetUtilizationRates(h)
                    mem = nv.nvmlDeviceGetMemoryInfo(h)
                    gpu.util_pct, gpu.mem_used, gpu.mem_total = int(util.gpu), int(mem.used), int(mem.total)
                out.append(gpu)
            except Exception as exc:
                LOG.debug("NVML device %d: %s", i, exc)
                out.append(Gpu(i, "unknown", ""))
        return out

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
