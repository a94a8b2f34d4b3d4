"""Registered clients: the libfikit.so processes of each domain.

Registration is the only moment a client talks to the daemon.  The daemon believes the
kernel (SO_PEERCRED) and the filesystem (the slot file's owner), never the message: a
client cannot claim another process's slot or a priority it was not granted.  The client
keeps its connection open, so its exit (kill -9 included) reaches the daemon as EOF; a
periodic sweep catches what EOF cannot (clients from before a daemon restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import access, log
from .config import AccessConfig
from .domains import Domains
from .jobs import proc_start_time
from .protocol import ProtocolError
from .store import Store

LOG = log.get("clients")

STALE_SLOT_S = 10.0  # a slot file nobody registered, whose owner is gone, is removed after this


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass
class Client:
    gpu: int
    slot: int
    pid: int
    uid: int
    prio_req: int
    prio: int
    prog: str
    job: int | None
    start: int | None
    registered_at: float = field(default_factory=time.time)
    flushed: dict[str, int] = field(default_factory=dict)  # kernel id -> launches already stored

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu, "slot": self.slot, "pid": self.pid, "uid": self.uid,
            "user": access.user_name(self.uid), "prio": self.prio, "prio_requested": self.prio_req,
            "prog": self.prog, "job": self.job, "registered_at": self.registered_at,
        }


class Clients:
    def __init__(self, domains: Domains, store: Store, access_cfg: Callable[[], AccessConfig],
                 job_owner: Callable[[int], int | None]) -> None:
        self.domains = domains
        self.store = store
        self.access_cfg = access_cfg
        self.job_owner = job_owner
        self.by_key: dict[tuple[int, int], Client] = {}
        self._orphans: dict[tuple[int, int], float] = {}

    def register(self, peer: Peer, args: dict[str, Any]) -> tuple[Client, dict[str, Any]]:
        gpu, slot, pid = args["gpu"], args["slot"], args["pid"]
        if pid != peer.pid:
            raise ProtocolError("not_permitted", f"pid {pid} is not the connecting process ({peer.pid})")
        dom = self.domains.get(gpu)
        if dom is None:
            if not self.domains.known(gpu):
                raise ProtocolError("not_found", f"no scheduling domain for gpu {gpu}")
            raise ProtocolError("unavailable", self.domains.describe(gpu).get("reason", "domain unavailable"))
        owner = dom.slot_owner(slot)
        if owner is None:
            raise ProtocolError("not_found", f"gpu{gpu}: no slot file slot.{slot}")
        if owner != peer.uid:
            raise ProtocolError(
                "not_permitted", f"gpu{gpu}: slot.{slot} belongs to uid {owner}, not {peer.uid}"
            )
        data = dom.slot(slot)
        if data is None:
            raise ProtocolError("bad_request", f"gpu{gpu}: slot.{slot} is not a valid slot file")
        if int(data.get("pid", pid) or 0) != pid:
            raise ProtocolError(
                "not_permitted", f"gpu{gpu}: slot.{slot} was claimed by pid {data.get('pid')}"
            )
        existing = self.by_key.get((gpu, slot))
        if existing is not None and existing.pid != pid and proc_start_time(existing.pid) is not None:
            raise ProtocolError("not_permitted", f"gpu{gpu}: slot {slot} is held by pid {existing.pid}")
        if existing is not None:
            self.unregister(existing, "slot re-registered")
        job = args.get("job")
        if job is not None and self.job_owner(job) != peer.uid:
            LOG.warning("pid %d claims job %s it does not own; ignoring the job id", pid, job)
            job = None
        prio = access.granted_prio(self.access_cfg(), peer.uid, args["prio"])
        prog = args["prog"]
        profile = ""
        kernels = self.store.kernels(prog)
        if kernels:
            try:
                profile = str(dom.write_profile(slot, kernels))
                LOG.info("gpu%d slot %d: %s starts with a stored profile of %d kernel(s)", gpu, slot, prog,
                         len(kernels))
            except Exception as exc:
                LOG.warning("gpu%d slot %d: cannot write profile for %s: %s", gpu, slot, prog, exc)
        dom.grant(slot, pid, prio, peer.uid)
        client = Client(gpu, slot, pid, peer.uid, args["prio"], prio, prog, job, proc_start_time(pid))
        self.by_key[(gpu, slot)] = client
        self._orphans.pop((gpu, slot), None)
        LOG.info("gpu%d slot %d: %s (pid %d, uid %d) registered at priority %d%s", gpu, slot, prog, pid,
                 peer.uid, prio, f" (asked {args['prio']})" if prio != args["prio"] else "")
        mode = str(dom.config().get("mode", ""))
        return client, {"prio": prio, "profile": profile, "mode": mode}

    def flush(self, client: Client) -> int:
        """Move new measurements of one client into the store; safe to call repeatedly."""
        dom = self.domains.get(client.gpu)
        if dom is None:
            return 0
        try:
            kernels = dom.kernels(client.slot)
        except Exception as exc:
            LOG.warning("gpu%d slot %d: cannot read kernel table: %s", client.gpu, client.slot, exc)
            return 0
        deltas: list[dict[str, Any]] = []
        for k in kernels:
            kid = str(k.get("id", ""))
            count = int(k.get("count", 0) or 0)
            new = count - client.flushed.get(kid, 0)
            if not kid or new <= 0:
                continue
            deltas.append({**k, "count": new})
            client.flushed[kid] = count
        return self.store.merge_kernels(client.prog, deltas) if deltas else 0

    def unregister(self, client: Client, why: str) -> None:
        if self.by_key.get((client.gpu, client.slot)) is not client:
            return
        del self.by_key[(client.gpu, client.slot)]
        try:
            self.flush(client)
        except Exception as exc:
            LOG.error("gpu%d slot %d: measurements not stored: %s", client.gpu, client.slot, exc)
        dom = self.domains.get(client.gpu)
        if dom is not None:
            try:
                dom.revoke(client.slot)
                dom.remove_slot(client.slot)
            except Exception as exc:
                LOG.warning("gpu%d slot %d: cleanup: %s", client.gpu, client.slot, exc)
        LOG.info("gpu%d slot %d: %s (pid %d) gone: %s", client.gpu, client.slot, client.prog, client.pid, why)

    def set_prio(self, peer: Peer, pid: int, prio: int) -> Client:
        """A process's priority in every domain it is a client of (one per GPU it launches on)."""
        mine = sorted((c for c in self.by_key.values() if c.pid == pid), key=lambda c: (c.gpu, c.slot))
        if not mine:
            raise ProtocolError("not_found", f"no registered client with pid {pid}")
        if peer.uid != 0 and peer.uid != mine[0].uid:
            raise ProtocolError("not_permitted", f"client {pid} belongs to another user")
        if access.granted_prio(self.access_cfg(), peer.uid, prio) != prio:
            raise ProtocolError("not_permitted", "high priority is not granted to you in [access]")
        doms = [self.domains.get(c.gpu) for c in mine]
        if any(dom is None for dom in doms):
            raise ProtocolError("unavailable", "a domain of the client is gone")
        for client, dom in zip(mine, doms, strict=True):
            assert dom is not None
            dom.grant(client.slot, client.pid, prio, client.uid)
            client.prio = prio
        return mine[0]

    def sweep(self) -> None:
        """Free slots of clients that died without an EOF reaching us."""
        for client in list(self.by_key.values()):
            if proc_start_time(client.pid) != client.start or client.start is None:
                self.unregister(client, "process ended")
        now = time.monotonic()
        for gpu, dom in list(self.domains.by_gpu.items()):
            for slot in self.domains.slot_indices(gpu):
                if (gpu, slot) in self.by_key:
                    continue
                try:
                    data = dom.slot(slot)
                except Exception:
                    data = None
                pid = int((data or {}).get("pid", 0) or 0)
                if pid and proc_start_time(pid) is not None:
                    continue  # alive: registering now, or from before a daemon restart
                first = self._orphans.setdefault((gpu, slot), now)
                if now - first >= STALE_SLOT_S or (pid and data is not None):
                    try:
                        dom.revoke(slot)
                        dom.remove_slot(slot)
                        LOG.info("gpu%d slot %d: removed stale slot (pid %s)", gpu, slot, pid or "?")
                    except Exception as exc:
                        LOG.warning("gpu%d slot %d: cannot remove stale slot: %s", gpu, slot, exc)
                    self._orphans.pop((gpu, slot), None)

    def flush_all(self) -> None:
        for client in list(self.by_key.values()):
            try:
                self.flush(client)
            except Exception as exc:
                LOG.error("gpu%d slot %d: flush failed: %s", client.gpu, client.slot, exc)

    def list(self) -> list[dict[str, Any]]:
        return [c.as_dict() for c in sorted(self.by_key.values(), key=lambda c: (c.gpu, c.slot))]
