"""The daemon's lifecycle: bring the parts up in order, run the loop, take them down.

READY=1 is sent only once the socket listens, the store is open and a managed MPS answers,
because systemd orders dependants on it.  The periodic work (reaping jobs, sweeping dead
clients, the watchdog, MPS supervision) runs as separate tasks so a slow MPS probe never
delays the watchdog or a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import config, log, ops, paths
from .clients import Clients
from .domains import Domains
from .gpus import Nvml
from .jobs import JobManager, proc_session
from .metrics import REFRESH_S, Metrics
from .mps import Mps
from .notify import Notifier
from .server import Connection, Server
from .store import Store, StoreWriteError

LOG = log.get("daemon")

TICK_S = 0.25
SWEEP_S = 2.0
FLUSH_S = 30.0
SHARE_S = 1.0  # the co-running share controller (fikitd/share.py) judges one-second ticks
MPS_CHECK_S = 2.0


class StartupError(Exception):
    pass


class Daemon:
    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._status_line = ""
        self.metrics: Metrics | None = None

    # --- start ------------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        p = self.cfg.paths
        for d, mode in ((p.runtime_dir, 0o755), (p.state_dir, 0o755), (p.log_dir, 0o755)):
            d.mkdir(parents=True, exist_ok=True, mode=mode)
        for d in (p.runtime_dir, p.state_dir):
            # Whoever owns these could swap the socket, a domain or the store under us: refuse.
            owner = d.stat().st_uid
            if owner != os.geteuid():
                raise StartupError(f"{d} is owned by uid {owner}, not by fikitd (uid {os.geteuid()}); "
                                   f"fix with: chown {os.geteuid()} {d}")
        os.chmod(p.runtime_dir, 0o755)
        lock = p.state_dir / "fikitd.lock"
        try:
            self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot open {lock}: {exc.strerror}; make {p.state_dir} and its files "
                               f"writable by fikitd (uid {os.geteuid()}), and check it has room") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            raise StartupError(f"another fikitd (pid {holder or '?'}) uses {p.state_dir}") from None
        os.ftruncate(self._lock_fd, 0)
        try:
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # the lock holds without it; the pid only names us to a second daemon
            LOG.warning("cannot write the pid to %s: %s", p.state_dir / "fikitd.lock", exc.strerror)

    async def start(self) -> None:
        self.notifier.status("starting")
        self._prepare_dirs()
        self.store = Store(self.cfg.paths.state_dir / "fikit.db")
        self.nvml = Nvml()
        if not self.nvml.available:
            LOG.warning("%s: jobs run without MPS or GPU information", self.nvml.reason)
        self.domains = Domains(self.cfg.paths.runtime_dir, self.cfg.scheduler, self.nvml.list(live=False))
        if self.cfg.metrics.enabled:  # before MPS: a taken port must fail start-up before anything is started
            self.metrics = Metrics(self)
            self.metrics.start(self.cfg.metrics.listen, *self.cfg.metrics.address)
        self.mps = Mps(self.cfg)
        self.notifier.status("starting MPS" if self.cfg.mps.mode == "manage" else "starting")
        await self.mps.start()
        self.jobs = JobManager(self.store, self.cfg.paths.state_dir / "jobs", self._job_env, self._preload)
        self.jobs.recover()
        self.clients = Clients(self.domains, self.store, lambda: self.cfg.access, self._job_owner)
        self.server = Server(self.cfg.paths.socket, self._dispatch, self._closed)
        await self.server.start()

    def _job_env(self, prio: int, gpu: int) -> dict[str, str]:
        env = {
            "FIKIT_DOMAIN": str(paths.domain_dir(self.cfg.paths.runtime_dir, gpu)),
            "FIKIT_SOCKET": str(self.cfg.paths.socket),
        }
        env.update(self.mps.client_env(prio))
        return env

    @staticmethod
    def _preload() -> Path | None:
        lib = paths.libfikit_path()
        return lib if lib.is_file() else None

    def _job_owner(self, job_id: int) -> int | None:
        job = self.store.job(job_id)
        return int(job["uid"]) if job else None

    def _dispatch(self, req: Any, conn: Connection) -> dict[str, Any]:
        return ops.dispatch(self, req, conn)

    def _closed(self, conn: Connection) -> None:
        if conn.client is not None:
            self.clients.unregister(conn.client, "connection closed")
            conn.client = None
            self.changed()

    def gpu_list(self, live: bool) -> list[dict[str, Any]]:
        listed = {g.index: g.as_dict() for g in self.nvml.list(live=live)}
        return [listed.get(g.index, g.as_dict()) for g in self.domains.gpus]

    # --- status line --------------------------------------------------------------------------------

    def status_text(self) -> str:
        gpu = f"{len(self.domains.by_gpu)} GPU domain(s)" if self.nvml.available else "no NVIDIA driver"
        return (f"{gpu}; MPS {self.mps.state}; {len(self.clients.by_key)} client(s); "
                f"{len(self.jobs.running)} job(s) running")

    def changed(self) -> None:
        text = self.status_text()
        if text != self._status_line:
            self._status_line = text
            self.notifier.status(text)

    # --- loop ---------------------------------------------------------------------------------------

    def _every(self, period: float, step: Callable[[], Awaitable[None] | None], name: str) -> None:
        async def run() -> None:
            while not self._stop.is_set():
                try:
                    result = step()
                    if result is not None:
                        await result
                except Exception:
                    LOG.exception("%s failed", name)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), period)

        self._tasks.append(asyncio.create_task(run(), name=name))

    def _tick(self) -> None:
        if self.jobs.poll():
            self.changed()

    def _sweep(self) -> None:
        self.clients.sweep()
        self.domains.heartbeat()
        self.changed()

    def _steer_shares(self) -> None:
        self.domains.steer_shares(time.monotonic(), self.nvml.sm_clock_mhz)

    async def _mps_check(self) -> None:
        before = self.mps.state
        await self.mps.check()
        if before in ("running", "attached") and self.mps.state in ("restarting", "down"):
            self._tell_jobs_mps_lost(self.mps.state)
        await self._watch_job_servers()
        self.changed()

    def _note(self, job_id: int, note: str) -> None:
        LOG.warning("job %s: %s", job_id, note)
        try:
            self.store.update_job(job_id, reason=note)
        except StoreWriteError as exc:
            LOG.error("job %s: %s", job_id, exc.message)

    def _tell_jobs_mps_lost(self, state: str) -> None:
        """The control daemon stopped answering: running jobs' records say so, for `fikitctl
        jobs/show`.  Whether their own server died with it is watched separately, per job (a job
        already told that its server died keeps that, more telling, reason)."""
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        note = (f"the MPS control daemon stopped answering at {when} (MPS {state}); "
                "CUDA calls through MPS may fail")
        for job_id, run in list(self.jobs.running.items()):
            if run.mps_lost is None:
                self._note(job_id, note)

    async def _watch_job_servers(self) -> None:
        """Link running jobs to the MPS servers their processes are clients of; tell a job whose
        server died (its CUDA calls fail from then on), and stop it if it has not ended
        ``[mps] dead_server_grace_s`` later: a program stuck on a dead server would otherwise hang
        for ever.  A job that exits by itself first ends `failed` with the same reason."""
        running = self.jobs.running
        now = time.monotonic()
        if self.mps.usable and any(not run.mps_servers for run in running.values()):
            by_session = {run.pid: run for run in running.values()}
            by_client = {c.pid: running.get(int(c.job))
                         for c in self.clients.by_key.values() if c.job is not None}
            for server, pids in (await self.mps.client_lists()).items():
                for pid in pids:
                    run = by_client.get(pid) or by_session.get(proc_session(pid) or -1)
                    if run is not None and server not in run.mps_servers:
                        run.mps_servers[server] = self.mps.server_start(server)
                        LOG.info("job %d: pid %d is a client of MPS server %d", run.job_id, pid, server)
        self.mps.link_jobs({job_id: list(run.mps_servers) for job_id, run in running.items()}, now,
                           lambda job_id: (self.store.job(job_id) or {}).get("state") == "failed")
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        for server, job_ids in self.mps.take_dead_servers().items():
            for job_id in job_ids:
                run = running.get(job_id)
                if run is None or run.mps_lost is not None:
                    continue
                run.mps_lost = f"its MPS server (pid {server}) died at {when}; CUDA calls through it fail"
                run.mps_lost_at = now
                self._note(job_id, run.mps_lost)
        grace = self.cfg.mps.dead_server_grace_s
        for run in list(running.values()):
            if grace and run.mps_lost_at is not None and now - run.mps_lost_at >= grace:
                self.jobs.stop(run.job_id, f"it had not ended {grace} s after that, so fikitd stopped it")

    def reload(self) -> None:
        """SIGHUP: take what can change live; a bad file keeps the running configuration."""
        self.notifier.reloading()
        source = self.cfg.source or paths.config_path()
        try:
            new = config.load(source) if source.exists() or self.cfg.source else config.Config()
        except config.ConfigError as exc:
            LOG.error("reload refused, keeping the running configuration:\n%s", exc)
            self.notifier.send("READY=1", f"STATUS=reload failed; {self.status_text()}")
            return
        for part in ("paths", "mps", "metrics"):
            if getattr(new, part) != getattr(self.cfg, part):
                LOG.warning("reload: [%s] changed; that takes effect on restart", part)
        self.cfg = config.Config(self.cfg.paths, self.cfg.mps, new.scheduler, new.access, self.cfg.metrics,
                                 source=self.cfg.source)
        self.domains.apply(new.scheduler)
        LOG.info("configuration reloaded from %s", source)
        self.notifier.send("READY=1", f"STATUS={self.status_text()}")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
        except Exception as exc:
            LOG.error("cannot start: %s", exc)
            self.notifier.send(f"STATUS=failed to start: {exc}", "ERRNO=1")
            return 1
        self._every(TICK_S, self._tick, "jobs")
        self._every(SWEEP_S, self._sweep, "sweep")
        self._every(FLUSH_S, self.clients.flush_all, "flush")
        self._every(SHARE_S, self._steer_shares, "share")
        self._every(MPS_CHECK_S, self._mps_check, "mps")
        if self.metrics is not None:
            self._every(REFRESH_S, self.metrics.refresh, "metrics")
        if self.notifier.watchdog_s:
            self._every(self.notifier.watchdog_s, self.notifier.watchdog, "watchdog")
        self._status_line = self.status_text()
        self.notifier.ready(self._status_line)
        LOG.info("ready on %s: %s", self.cfg.paths.socket, self._status_line)
        await self._stop.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Leave jobs and clients running (they outlive a restart); store what was measured."""
        self.notifier.stopping()
        LOG.info("stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.metrics is not None:  # before the domains close under a scrape
            await asyncio.to_thread(self.metrics.stop)
        await self.server.close()
        self.clients.flush_all()
        try:
            await asyncio.wait_for(self.mps.stop(), 6.0)
        except asyncio.TimeoutError:
            LOG.warning("MPS did not stop in time")
        self.domains.close()
        self.nvml.close()
        self.store.close()
        LOG.info("stopped")
