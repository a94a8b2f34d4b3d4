"""The scheduling domains: one shared-memory directory per GPU, made and kept by the daemon.

The layout itself belongs to fikitd/shm.py (which asks libfikit.so for it); this module
decides which domains exist and keeps their configuration and heartbeat current.  If the
layout cannot be loaded (libfikit.so missing) the daemon still runs jobs: clients then find
no domain and fail open, and ``status`` says why.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import log, paths
from .config import SchedulerConfig
from .gpus import Gpu
from .jobs import proc_start_time
from .share import DomainShares

LOG = log.get("domains")


def load_shm() -> tuple[Any, str]:
    """The shm module, or None and why; imported late so its failure is survivable."""
    try:
        return importlib.import_module("fikitd.shm"), ""
    except Exception as exc:  # ImportError, or the layout query against libfikit.so failing
        return None, f"shared-memory layout unavailable: {exc}"


class Domains:
    def __init__(self, runtime_dir: Path, sched: SchedulerConfig, gpus: list[Gpu]) -> None:
        self.runtime_dir = runtime_dir
        self.sched = sched
        self.shm, self.reason = load_shm()
        self.by_gpu: dict[int, Any] = {}
        self.errors: dict[int, str] = {}
        self.shares = self._new_shares(sched)
        self.pinned: set[int] = set()  # GPUs whose co-running share set_mode fixed until a reload
        # Without a driver there is still one domain, so jobs and fake-driver clients work.
        self.gpus = gpus or [Gpu(0, "no GPU (no NVIDIA driver)", "")]
        if self.shm is None:
            LOG.error("%s; clients will run without scheduling", self.reason)
            return
        for gpu in self.gpus:
            self._open(gpu)
        self._link_by_uuid()

    def _link_by_uuid(self) -> None:
        """``<runtime_dir>/by-uuid/GPU-...`` -> ``../gpu<N>``, remade at every start.

        A container or batch job is told its GPU by uuid (NVIDIA_VISIBLE_DEVICES from the
        device plugin, the NVIDIA runtime) and sees it as its device 0, so it cannot know
        NVML's index N; the link lets it find its domain from what it does know.
        """
        links = self.runtime_dir / "by-uuid"
        try:
            links.mkdir(mode=0o755, exist_ok=True)
            for old in links.iterdir():
                if old.is_symlink():
                    old.unlink()
            for gpu in self.gpus:
                if gpu.uuid and gpu.index in self.by_gpu and "/" not in gpu.uuid:
                    (links / gpu.uuid).symlink_to(f"../gpu{gpu.index}")
        except OSError as exc:
            LOG.warning("cannot make %s: %s", links, exc)

    def _open(self, gpu: Gpu) -> None:
        path = paths.domain_dir(self.runtime_dir, gpu.index)
        fields = self.sched.domain_fields()
        try:
            dom = None
            if (path / "domain").exists():
                try:
                    dom = self.shm.Domain.open(path, writable=True)
                    self._check_identity(dom, gpu)
                    dom.set_config(**fields)
                    self._drop_dead_grants(dom)
                    os.chmod(path, 0o1777)
                    LOG.info("gpu%d: reopened domain %s", gpu.index, path)
                except Exception as exc:
                    LOG.warning("gpu%d: existing domain unusable (%s); creating a new one", gpu.index, exc)
                    dom = None
            if dom is None:
                dom = self.shm.Domain.create(path, gpu.index, uuid=gpu.uuid, **fields)
                LOG.info("gpu%d: created domain %s", gpu.index, path)
            self.by_gpu[gpu.index] = dom
        except Exception as exc:
            self.errors[gpu.index] = f"cannot create domain {path}: {exc}"
            LOG.error("gpu%d: %s", gpu.index, self.errors[gpu.index])

    @staticmethod
    def _check_identity(dom: Any, gpu: Gpu) -> None:
        """A domain left by an earlier run must describe the same GPU, or it is made anew.

        After a GPU is swapped, or NVML renumbers the GPUs, gpu<N> would otherwise keep the old
        GPU's uuid in its header, and a client matching its device by uuid would join the
        wrong domain.
        """
        conf = dom.config()
        if conf.get("gpu_index") != gpu.index or (gpu.uuid and conf.get("gpu_uuid") != gpu.uuid):
            dom.close()
            was = f"GPU {conf.get('gpu_index')} {conf.get('gpu_uuid') or '(no uuid)'}"
            raise ValueError(f"it describes {was}, not GPU {gpu.index} {gpu.uuid or '(no uuid)'}")

    def _drop_dead_grants(self, dom: Any) -> None:
        for g in dom.grants():
            if g.pid and proc_start_time(g.pid) is None:
                dom.revoke(g.slot)
                dom.remove_slot(g.slot)

    def get(self, gpu: int) -> Any | None:
        return self.by_gpu.get(gpu)

    def known(self, gpu: int) -> bool:
        return any(g.index == gpu for g in self.gpus)

    @staticmethod
    def _new_shares(sched: SchedulerConfig) -> DomainShares:
        return DomainShares(sched.corun_start_pct, sched.corun_max_pct, sched.corun_hp_tolerance,
                            float(sched.budget_us))

    def apply(self, sched: SchedulerConfig) -> None:
        """A reload: new budgets reach running clients through the domain's generation bump."""
        self.sched = sched
        self.shares = self._new_shares(sched)
        self.pinned.clear()
        for index, dom in self.by_gpu.items():
            try:
                dom.set_config(**sched.domain_fields())
            except Exception as exc:
                LOG.error("gpu%d: cannot apply scheduler settings: %s", index, exc)

    def set_config(self, gpu: int | None, **fields: int | str) -> None:
        """Scheduler settings of one GPU's domain, or of all: mode and the budgets.

        A co-running share set here is pinned (the "auto" controller leaves it) until a reload."""
        for index, dom in self.by_gpu.items():
            if gpu is None or gpu == index:
                dom.set_config(**fields)
                if "corun_sm_pct" in fields:
                    self.pinned.add(index)

    def steer_shares(self, now_s: float, sm_clock: Callable[[int], float | None] = lambda gpu: None) -> None:
        """With corun_sm_pct = "auto": each GPU's co-running share, from its HP kernels' timings."""
        if not self.sched.corun_auto:
            return
        for index, dom in self.by_gpu.items():
            if index in self.pinned:
                continue
            try:
                clients = dom.snapshot()["clients"]
                pct = self.shares.tick(index, now_s, clients, dom.kernels, sm_clock(index))
                if pct != dom.config().get("corun_sm_pct"):
                    dom.set_config(corun_sm_pct=pct)
                    LOG.info("gpu%d: co-running share %d%% (%s)", index, pct,
                             self.shares.controller(index).why)
            except Exception as exc:
                LOG.debug("gpu%d: co-running share: %s", index, exc)

    def share_source(self, gpu: int) -> dict[str, Any]:
        """How the share of a GPU was chosen, for status and top."""
        if not self.sched.corun_auto or gpu in self.pinned:
            return {"corun_source": "pinned"}
        ctl = self.shares.by_gpu.get(gpu)
        return {"corun_source": "auto", "corun_why": ctl.why if ctl else "start"}

    def heartbeat(self) -> None:
        for dom in self.by_gpu.values():
            try:
                dom.heartbeat()
            except Exception as exc:
                LOG.debug("heartbeat: %s", exc)

    def describe(self, gpu: int) -> dict[str, Any]:
        dom = self.by_gpu.get(gpu)
        if dom is None:
            return {"available": False, "reason": self.errors.get(gpu) or self.reason or "no domain"}
        try:
            return {"available": True, "path": str(paths.domain_dir(self.runtime_dir, gpu)), **dom.config(),
                    **self.share_source(gpu)}
        except Exception as exc:
            return {"available": False, "reason": f"domain unreadable: {exc}"}

    def snapshot(self, gpu: int) -> dict[str, Any]:
        dom = self.by_gpu.get(gpu)
        if dom is None:
            why = self.errors.get(gpu) or self.reason or "no domain"
            return {"available": False, "reason": why, "clients": []}
        try:
            snap: dict[str, Any] = dom.snapshot()
            snap.setdefault("clients", [])
            snap["config"] = {**snap.get("config", {}), **self.share_source(gpu)}
            return {"available": True, **snap}
        except Exception as exc:
            return {"available": False, "reason": f"domain unreadable: {exc}", "clients": []}

    def slot_indices(self, gpu: int) -> list[int]:
        """Slot files present in a domain directory, whoever made them."""
        out: list[int] = []
        try:
            for entry in os.scandir(paths.domain_dir(self.runtime_dir, gpu)):
                name = entry.name
                if name.startswith("slot.") and name[5:].isdigit():
                    out.append(int(name[5:]))
        except OSError:
            pass
        return sorted(out)

    def close(self) -> None:
        for dom in self.by_gpu.values():
            with contextlib.suppress(Exception):
                dom.close()
        self.by_gpu.clear()
