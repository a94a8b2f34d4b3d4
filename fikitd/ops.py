"""What each socket op does, with its permission rule next to it.

A user sees and acts on their own jobs only, root on all; only users allowed by
``[access]`` may ask for high priority; changing the scheduler mode is root's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, access, log, protocol
from . import gpus as gpus_mod
from .jobs import ACTIVE, JobError
from .protocol import ProtocolError, Request
from .server import Connection
from .store import StoreWriteError

if TYPE_CHECKING:
    from .daemon import Daemon

# Runs the script as the user: directly when they made it executable, through sh otherwise.
SCRIPT_RUNNER = 'if [ -x "$0" ]; then exec "$0" "$@"; else exec /bin/sh "$0" "$@"; fi'

LOG = log.get("ops")


def dispatch(d: Daemon, req: Request, conn: Connection) -> dict[str, Any]:
    handler = HANDLERS[req.op]
    try:
        return handler(d, req.args, conn)
    except StoreWriteError as exc:  # a full or read-only state directory: the operator's to fix
        LOG.error("%s: %s", req.op, exc.message)
        raise ProtocolError("unavailable", exc.message) from None


def _hello(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    return {"daemon_version": __version__, "protocol": protocol.VERSION, "uid": c.peer.uid,
            "user": access.user_name(c.peer.uid)}


def _register(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    if c.client is not None:
        raise ProtocolError("bad_request", "this connection already registered a client")
    client, result = d.clients.register(c.peer, a)
    c.client = client
    return result


def _own_job(d: Daemon, job_id: int, c: Connection) -> dict[str, Any]:
    job = d.store.job(job_id)
    if job is None:
        raise ProtocolError("not_found", f"no job {job_id}")
    if c.peer.uid != 0 and job["uid"] != c.peer.uid:
        raise ProtocolError("not_permitted", f"job {job_id} belongs to another user")
    return job


def _submit(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    prio = a.get("prio", access.NORMAL)
    if access.granted_prio(d.cfg.access, c.peer.uid, prio) != prio:
        raise ProtocolError("not_permitted", "high priority is not granted to you in [access] of fikit.toml")
    env: dict[str, str] | None = a.get("env")
    gpu, visible = _place(d, a.get("gpu"), env)
    if visible is not None:
        env = {**(env or {}), "CUDA_VISIBLE_DEVICES": visible}
    argv = a["argv"] if "argv" in a else ["/bin/sh", "-c", SCRIPT_RUNNER, a["script"]]
    name = a.get("name") or (os.path.basename(a["script"]) if "script" in a else None)
    try:
        job = d.jobs.submit(uid=c.peer.uid, gid=c.peer.gid, argv=argv, cwd=a.get("cwd"), env=env,
                            prio=prio, gpu=gpu, name=name)
    except JobError as exc:
        raise ProtocolError(exc.code, exc.message) from None
    d.changed()
    return {"job": job}


def _place(d: Daemon, asked: int | None, env: dict[str, str] | None) -> tuple[int, str | None]:
    """The job's GPU, and the CUDA_VISIBLE_DEVICES to give it (None: leave the job's own alone).

    A job that sets CUDA_VISIBLE_DEVICES has chosen: it keeps the value and runs in the domain
    of the GPU it names first.  Otherwise ``gpu`` (``submit --gpu``) or the least loaded GPU is
    used, and the job is confined to it by uuid, which unlike an index means the same GPU to
    NVML and to CUDA whatever CUDA_DEVICE_ORDER says.  Without a known GPU (no driver) nothing
    is set, so the job sees whatever the host has.
    """
    gpus = d.domains.gpus
    named = (env or {}).get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        try:
            seen = gpus_mod.visible_gpu(named, gpus)
        except ValueError as exc:
            raise ProtocolError("not_found", str(exc)) from None
        if seen is not None and asked is not None and asked != seen:
            raise ProtocolError("bad_request", f"--gpu {asked} contradicts CUDA_VISIBLE_DEVICES={named} "
                                               f"(GPU {seen}): give one or the other")
        if seen is not None:
            return seen, None
    if asked is not None:
        if not d.domains.known(asked):
            raise ProtocolError("not_found", f"no GPU {asked} on this host ({gpus_mod.listing(gpus)})")
        gpu = asked
    else:
        live = {g["index"]: g.get("util_pct") for g in d.gpu_list(live=True)}
        ranked = [dataclasses.replace(g, util_pct=live.get(g.index)) for g in gpus]
        gpu = gpus_mod.least_loaded(ranked, _gpu_load(d))
    if named is not None:
        return gpu, None
    uuid = next((g.uuid for g in gpus if g.index == gpu), "")
    return gpu, uuid or None


def _gpu_load(d: Daemon) -> dict[int, int]:
    """fikit users per GPU: registered clients, plus started jobs whose client has not registered yet.

    Counting the jobs matters for a burst of submissions: each one's library registers only
    once its CUDA context exists, seconds later, and until then every GPU would look idle.
    """
    load: dict[int, int] = {}
    jobs_seen: set[int] = set()
    for client in d.clients.by_key.values():
        load[client.gpu] = load.get(client.gpu, 0) + 1
        if client.job is not None:
            jobs_seen.add(int(client.job))
    for job_id in d.jobs.running:
        if job_id in jobs_seen:
            continue
        job = d.store.job(job_id)
        if job is not None and job.get("gpu") is not None:
            load[job["gpu"]] = load.get(job["gpu"], 0) + 1
    return load


def _jobs(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    """Active jobs by default; ``all`` adds ended ones; ``state`` picks one state."""
    if "state" in a:
        states: tuple[str, ...] | None = (a["state"],)
    else:
        states = None if a.get("all") else ACTIVE
    uid = None if c.peer.uid == 0 else c.peer.uid
    return {"jobs": d.store.jobs(uid=uid, states=states)}


def _show(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    return {"job": _own_job(d, a["job"], c)}


def _cancel(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    _own_job(d, a["job"], c)
    try:
        d.jobs.cancel(a["job"])
    except JobError as exc:
        raise ProtocolError(exc.code, exc.message) from None
    d.changed()
    return {"job": d.store.job(a["job"])}


def _utf8_cut(data: bytes) -> bytes:
    """Drop a trailing partial UTF-8 sequence so the next read starts on a character."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return data[:-back] if need > back else data
    return data


def _logs(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    job = _own_job(d, a["job"], c)
    stream = a.get("stream", "stdout")
    offset, limit = a.get("offset", 0), a.get("max", 64 * 1024)
    path = Path(job["log_dir"]) / stream
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return {"data": "", "offset": offset, "eof": job["state"] not in ACTIVE, "state": job["state"]}
    except OSError as exc:
        why = f"cannot read {stream} of job {job['id']}: {exc.strerror}"
        raise ProtocolError("unavailable", why) from None
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, limit, offset) if offset < size else b""
    finally:
        os.close(fd)
    if len(data) == limit:
        data = _utf8_cut(data)
    end = offset + len(data)
    return {"data": data.decode("utf-8", errors="replace"), "offset": end,
            "eof": end >= size and job["state"] not in ACTIVE, "state": job["state"]}


def _status(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    gpus = []
    for g in d.gpu_list(live=False):
        gpus.append({**g, "domain": d.domains.describe(g["index"])})
    return {
        "daemon": {
            "version": __version__, "pid": os.getpid(), "uptime_s": round(time.monotonic() - d.started, 3),
            "config": str(d.cfg.source) if d.cfg.source else None, "socket": str(d.cfg.paths.socket),
            "state_dir": str(d.cfg.paths.state_dir), "nvidia": d.nvml.available or False,
            "nvidia_reason": d.nvml.reason, "store_events": d.store.events, "requests": d.server.served,
            "jobs_running": len(d.jobs.running),
        },
        "mps": d.mps.describe(),
        "gpus": gpus,
        "clients": d.clients.list(),
        "scheduler": {
            **d.cfg.scheduler.domain_fields(), "min_lp_share": d.cfg.scheduler.min_lp_share,
            "by_gpu": {str(g): d.domains.describe(g).get("mode") for g in d.domains.by_gpu},
        },
    }


def _snapshot(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    registered = {(cl["gpu"], cl["slot"]): cl for cl in d.clients.list()}
    out = []
    for g in d.gpu_list(live=True):
        snap = d.domains.snapshot(g["index"])
        for cl in snap.get("clients", []):
            if isinstance(cl, dict):
                extra = registered.get((g["index"], cl.get("slot")))
                if extra:
                    for k in ("prog", "job", "user", "prio_requested"):
                        cl.setdefault(k, extra[k])
        out.append({**g, **snap})
    return {"time": time.time(), "gpus": out, "mps": d.mps.describe()}


def _profiles(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    action = a["action"]
    if action == "list":
        return {"profiles": d.store.programs()}
    if action == "show":
        return {"prog": a["prog"], "kernels": d.store.kernels(a["prog"])}
    if c.peer.uid != 0:
        raise ProtocolError("not_permitted", "only root may remove profiles (they are shared by all users)")
    return {"prog": a["prog"], "removed": d.store.remove_profile(a["prog"])}


def _set_mode(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    if c.peer.uid != 0:
        raise ProtocolError("not_permitted", "only root may change the scheduler mode")
    gpu = a.get("gpu")
    if gpu is not None and d.domains.get(gpu) is None:
        raise ProtocolError("not_found", f"no scheduling domain for gpu {gpu}")
    if not d.domains.by_gpu:
        raise ProtocolError("unavailable", d.domains.reason or "no scheduling domains")
    keys = ("mode", "budget_us", "idle_us", "corun_sm_pct")
    changes = {k: a[k] for k in keys if a.get(k) is not None}
    if not changes:
        raise ProtocolError("bad_request", "set_mode needs at least one of " + ", ".join(keys))
    d.domains.set_config(gpu, **changes)
    LOG.info("scheduler of %s set to %s by uid %d", "every GPU" if gpu is None else f"gpu{gpu}",
             ", ".join(f"{k}={v}" for k, v in changes.items()), c.peer.uid)
    return {"scheduler": {"by_gpu": {str(g): {k: d.domains.describe(g).get(k) for k in keys}
                                     for g in d.domains.by_gpu}}}


def _set_prio(d: Daemon, a: dict[str, Any], c: Connection) -> dict[str, Any]:
    return {"client": d.clients.set_prio(c.peer, a["pid"], a["prio"]).as_dict()}


HANDLERS = {
    "hello": _hello, "register": _register, "submit": _submit, "jobs": _jobs, "show": _show,
    "cancel": _cancel, "logs": _logs, "status": _status, "snapshot": _snapshot, "profiles": _profiles,
    "set_mode": _set_mode, "set_prio": _set_prio,
}
assert set(HANDLERS) == set(protocol.OPS)
