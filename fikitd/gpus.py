"""GPUs as NVML sees them; an empty list and a reason on a host without the driver.

A newcomer's laptop and CI have no NVIDIA driver, and the daemon must still start there,
so nothing in this module raises (the placement helpers at the end raise ValueError on a
request naming a GPU that is not here, which the caller turns into a protocol error).

Testing aid: ``FIKIT_FAKE_GPUS`` in fikitd's environment declares GPUs on a host where NVML
cannot be loaded, so the multi-GPU paths (one domain per GPU, placement, CUDA_VISIBLE_DEVICES
mapping) can be tested without hardware.  Its value is a count (``"4"``: uuids
``GPU-fake-0`` ...) or a comma-separated list of uuids (``"GPU-aaa,GPU-bbb"``).  It is read
here only, and ignored whenever NVML answers, so a stray variable on a real GPU host changes
nothing.  It is deliberately not a fikit.toml key: an operator-visible setting that invents
GPUs would be a second, wrong source of truth on a real host.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Any

from . import log

LOG = log.get("gpus")

FAKE_ENV = "FIKIT_FAKE_GPUS"
FAKE_MAX = 64


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
            return len(fake_gpus())
        try:
            return int(self._nvml.nvmlDeviceGetCount())
        except Exception as exc:
            self.reason = f"NVML: {exc}"
            return 0

    def list(self, live: bool = True) -> list[Gpu]:
        """Names and uuids always; utilisation and memory when ``live`` (they cost an ioctl each)."""
        if self._nvml is None:
            return fake_gpus()
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

    def sm_clock_mhz(self, index: int) -> float | None:
        """The SM clock now; None without NVML.  (The share controller compares kernel times
        across ticks: a GPU that idled at 465 MHz and boosts to 1980 under load must not look
        like co-running slowing HP down, or speeding it up.)"""
        if self._nvml is None:
            return None
        try:
            nv = self._nvml
            return float(nv.nvmlDeviceGetClockInfo(nv.nvmlDeviceGetHandleByIndex(index), nv.NVML_CLOCK_SM))
        except Exception as exc:
            LOG.debug("NVML clock of device %d: %s", index, exc)
            return None

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def fake_gpus() -> list[Gpu]:
    """The GPUs ``FIKIT_FAKE_GPUS`` declares (see the module docstring); none when unset or malformed."""
    raw = os.environ.get(FAKE_ENV, "").strip()
    if not raw:
        return []
    if raw.isdigit():
        uuids = [f"GPU-fake-{i}" for i in range(min(int(raw), FAKE_MAX))]
    else:
        uuids = [u.strip() for u in raw.split(",")]
        if len(uuids) > FAKE_MAX or not all(u.startswith("GPU-") and len(u) > 4 for u in uuids) \
                or len({u.lower() for u in uuids}) != len(uuids):
            LOG.error("%s=%r ignored: expected a count or distinct GPU-<uuid> entries", FAKE_ENV, raw)
            return []
    return [Gpu(i, f"fake GPU ({FAKE_ENV})", u) for i, u in enumerate(uuids)]


# --- placement: which GPU a job runs on --------------------------------------------------------


def visible_gpu(value: str, gpus: list[Gpu]) -> int | None:
    """The index of the GPU that CUDA calls device 0 under ``CUDA_VISIBLE_DEVICES=value``.

    Only the first entry matters for the job's domain: it is the device a single-GPU program
    uses, and CUDA itself ignores every entry after an invalid one.  None when the value hides
    every GPU (empty, or a negative index); ValueError when it names a GPU not on this host,
    because a job sent to the wrong domain would be scheduled against the wrong peers.

    Indices are NVML's (PCI bus order).  CUDA numbers devices fastest-first unless
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; the two agree on a host of identical GPUs, and a uuid
    avoids the question altogether, which is why placement itself hands out uuids.
    """
    first = value.split(",", 1)[0].strip()
    if not first:
        return None
    if first.lstrip("-").isdigit():
        n = int(first)
        if n < 0:
            return None
        if any(g.index == n for g in gpus):
            return n
        raise ValueError(f"CUDA_VISIBLE_DEVICES={value}: no GPU {n} on this host ({listing(gpus)})")
    if first.upper().startswith("GPU-"):
        # CUDA accepts any unique prefix of a uuid; so does this.
        matches = [g for g in gpus if g.uuid and g.uuid.lower().startswith(first.lower())]
        if len(matches) == 1:
            return matches[0].index
        if matches:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={value}: {first} matches several GPUs")
        raise ValueError(f"CUDA_VISIBLE_DEVICES={value}: no GPU with uuid {first} on this host")
    if first.upper().startswith("MIG-"):
        raise ValueError(f"CUDA_VISIBLE_DEVICES={value}: MIG instances have no fikit domain of their own; "
                         "name the whole GPU")
    raise ValueError(f"CUDA_VISIBLE_DEVICES={value}: {first!r} is neither a GPU index nor GPU-<uuid>")


def least_loaded(gpus: list[Gpu], load: dict[int, int]) -> int:
    """The GPU a job without a choice goes to: fewest fikit users, then lowest utilisation, then index.

    The count of fikit users (registered clients and started jobs) comes first because it is
    exact and reacts at once to a burst of submissions, whereas NVML's utilisation is a sample
    over the last second that a job started a moment ago has not moved yet.  Utilisation then
    separates GPUs equally loaded by fikit, for instance one busy with work outside fikit.
    """
    if not gpus:
        return 0
    best = min(gpus, key=lambda g: (load.get(g.index, 0), g.util_pct if g.util_pct is not None else 0,
                                    g.index))
    return best.index


def listing(gpus: list[Gpu]) -> str:
    if not gpus:
        return "no GPUs"
    return "GPUs: " + ", ".join(str(g.index) for g in gpus)
