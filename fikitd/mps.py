"""The NVIDIA MPS control daemon: started and supervised (manage), used (attach) or not (none).

All MPS clients share one server per pipe directory; fikit gives the managed one its own
pipe and log directories so it never collides with an MPS the operator runs by hand.  The
control daemon forks itself into the background (``-d``), so it is watched by asking it a
question (``get_server_list``) rather than by waiting on a pid.

The answer also lists the MPS servers (one per user, started by the control daemon for the first
client).  A server can die while the control daemon lives on (killed, or crashed); its clients'
CUDA calls then fail and the control daemon starts a new server for the next client.  The daemon
(daemon.py) links running jobs to the servers they are clients of (``get_client_list``) and tells
a job whose server died; the events of both kinds are kept here for ``status``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from typing import Any

from . import log
from .config import Config
from .jobs import proc_start_time

LOG = log.get("mps")

PROBE_INTERVAL_S = 2.0
FAILURES_BEFORE_RESTART = 2
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0
START_WAIT_S = 20.0
EVENTS_KEPT = 20
ENDED_LINKS_KEPT_S = 10.0


def _pids(text: str) -> list[int]:
    """The pids in a get_server_list / get_client_list answer (one a line; anything else ignored)."""
    return [int(w) for w in text.split() if w.isdigit() and int(w) > 0]


class Mps:
    def __init__(self, cfg: Config) -> None:
        self.mode = cfg.mps.mode
        self.control = cfg.mps.control
        self.pipe_dir = cfg.mps_pipe_dir
        self.log_dir = cfg.mps_log_dir
        self.state = "disabled" if self.mode == "none" else "starting"
        self.reason = "[mps] mode = none" if self.mode == "none" else ""
        self.restarts = 0
        self.last_ok: float | None = None
        self.servers: list[int] = []  # as the last get_server_list answered
        self.server_deaths = 0  # servers that died with a running job as their client
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self.job_servers: dict[int, list[int]] = {}  # job id -> servers its processes are clients of
        self._seen: dict[int, int | None] = {}  # every server pid listed so far -> its start time
        self._ended: dict[int, float] = {}  # job id -> when its links were last seen running
        self._binary: str | None = None
        self._failures = 0
        self._backoff = BACKOFF_FIRST_S
        self._next_restart = 0.0

    # --- what others ask -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.state in ("running", "attached")

    def client_env(self, prio: int) -> dict[str, str]:
        """What a job needs to join this MPS server; low-priority jobs ask MPS for the lower level."""
        if not self.usable:
            return {}
        env = {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir)}
        if prio >= 2:
            env["CUDA_MPS_CLIENT_PRIORITY"] = "1"
        return env

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "state": self.state, "reason": self.reason, "restarts": self.restarts,
            "pipe_dir": str(self.pipe_dir), "log_dir": str(self.log_dir), "last_ok": self.last_ok,
            "servers": list(self.servers), "server_deaths": self.server_deaths,
            "jobs": {str(j): s for j, s in sorted(self.job_servers.items())}, "events": list(self.events),
        }

    def event(self, text: str, level: int = logging.WARNING) -> None:
        """Something happened to MPS: logged, and kept (the last EVENTS_KEPT) for ``status``."""
        self.events.append({"time": round(time.time(), 3), "event": text})
        LOG.log(level, "MPS %s", text)

    # --- running the control binary ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.pipe_dir)
        env["CUDA_MPS_LOG_DIRECTORY"] = str(self.log_dir)
        return env

    async def _ask(self, command: str, timeout: float = 5.0) -> tuple[bool, str]:
        """Send one command to the control daemon through its front end; (answered, output)."""
        assert self._binary is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                self._binary, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self._env(), start_new_session=True,
            )
        except OSError as exc:
            return False, str(exc)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(command.encode() + b"\n"), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"no answer within {timeout:g} s"
        return proc.returncode == 0, out.decode(errors="replace").strip()

    async def probe(self) -> bool:
        ok, out = await self._ask("get_server_list")
        if ok:
            self.last_ok = time.time()
            self.servers = _pids(out)
            for pid in self.servers:
                if pid not in self._seen:
                    self._seen[pid] = proc_start_time(pid)
        else:
            self.reason = f"control daemon does not answer: {out[:200]}"
        return ok

    async def client_lists(self) -> dict[int, list[int]]:
        """Each listed server's client pids (a server that does not answer is left out)."""
        if self._binary is None or not self.usable:
            return {}
        out: dict[int, list[int]] = {}
        for server in list(self.servers):
            ok, text = await self._ask(f"get_client_list {server}")
            if ok:
                out[server] = _pids(text)
        return out

    def server_start(self, pid: int) -> int | None:
        """The start time recorded when the server was first listed (to tell it from a reused pid)."""
        return self._seen.get(pid)

    def _alive_servers(self) -> list[int]:
        """Servers seen so far that still run (the same process: start time checked)."""
        return [pid for pid, start in self._seen.items()
                if start is not None and proc_start_time(pid) == start]

    def take_dead_servers(self) -> dict[int, list[int]]:
        """Servers seen before that are gone now (asked of /proc: works while the control daemon is
        down too), each with the jobs that were its clients; each one is reported once, here."""
        dead: dict[int, list[int]] = {}
        for pid, start in list(self._seen.items()):
            if start is not None and proc_start_time(pid) == start:
                continue
            del self._seen[pid]
            self.servers = [s for s in self.servers if s != pid]
            jobs = sorted(j for j, servers in self.job_servers.items() if pid in servers)
            dead[pid] = jobs
            if jobs:
                self.server_deaths += 1
                self.event(f"server {pid} died; job(s) {', '.join(map(str, jobs))} were its clients")
            else:
                self.event(f"server {pid} is gone (no running job was its client)", logging.INFO)
        return dead

    def link_jobs(self, running: dict[int, list[int]], now: float, failed: Callable[[int], bool]) -> None:
        """Record which servers each job uses.  A job that ended ``failed`` keeps its links a little
        while, so that a server that died under it (the job failing first) is reported with it."""
        for job_id, servers in running.items():
            if servers:
                self.job_servers[job_id] = sorted(servers)
                self._ended.pop(job_id, None)
        for job_id in list(self.job_servers):
            if job_id in running:
                continue
            if job_id not in self._ended and not failed(job_id):
                del self.job_servers[job_id]
                continue
            ended = self._ended.setdefault(job_id, now)
            if now - ended > ENDED_LINKS_KEPT_S:
                del self.job_servers[job_id], self._ended[job_id]

    async def _launch(self) -> bool:
        assert self._binary is not None
        for d in (self.pipe_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            proc = await asyncio.create_subprocess_exec(
                self._binary, "-d", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=self._env(), start_new_session=True,
            )
            rc = await asyncio.wait_for(proc.wait(), 10.0)
        except (OSError, asyncio.TimeoutError) as exc:
            self.reason = f"cannot start {self._binary} -d: {exc}"
            return False
        if rc != 0:
            self.reason = f"{self._binary} -d exited with {rc}"
            return False
        for _ in range(40):  # the daemon needs a moment to open its pipe
            if await self.probe():
                return True
            await asyncio.sleep(0.1)
        return False

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self, wait_s: float = START_WAIT_S) -> None:
        """Bring MPS up (or find it), waiting at most ``wait_s`` so the daemon can go ready degraded."""
        if self.mode == "none":
            return
        self._binary = shutil.which(self.control) if "/" not in self.control else self.control
        if self._binary is None or not os.access(self._binary, os.X_OK):
            self.state = "unavailable"
            self.reason = f"{self.control} not found (no NVIDIA driver?): running without MPS"
            self._binary = None
            LOG.warning("MPS: %s", self.reason)
            return
        if await self.probe():
            self.state = "running" if self.mode == "manage" else "attached"
            self.reason = "found an MPS control daemon already answering" if self.mode == "manage" else ""
            what = "adopted a running control daemon" if self.mode == "manage" else "attached"
            LOG.info("MPS: %s at %s", what, self.pipe_dir)
            return
        if self.mode == "attach":
            self.state = "down"
            LOG.warning("MPS attach: %s", self.reason)
            return
        deadline = time.monotonic() + wait_s
        while True:
            if await self._launch():
                self.state, self.reason = "running", ""
                LOG.info("MPS control daemon started (pipe %s, log %s)", self.pipe_dir, self.log_dir)
                return
            if time.monotonic() + self._backoff > deadline:
                self.state = "restarting"
                self._next_restart = time.monotonic() + self._backoff
                LOG.error("MPS did not start: %s; will keep trying", self.reason)
                return
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    async def check(self) -> None:
        """One supervision step, called periodically from the daemon's loop."""
        if self._binary is None or self.mode == "none":
            return
        if self.state in ("running", "attached", "down"):
            if await self.probe():
                if self.state == "down":
                    LOG.info("MPS answers again")
                    self.state = "attached" if self.mode == "attach" else "running"
                self._failures = 0
                self._backoff = BACKOFF_FIRST_S
                return
            self._failures += 1
            if self._failures < FAILURES_BEFORE_RESTART:
                return
            if self.mode == "attach":
                if self.state != "down":
                    self.event(f"control daemon (attached) stopped answering ({self.reason})", logging.ERROR)
                self.state = "down"
                return
            self.event(f"control daemon died: it stopped answering ({self.reason}); restarting it in "
                       f"{self._backoff:.1f} s", logging.ERROR)
            self.state = "restarting"
            self._next_restart = time.monotonic() + self._backoff
            return
        if self.state == "restarting" and time.monotonic() >= self._next_restart:
            self.restarts += 1
            if await self._launch():
                self.state, self.reason, self._failures = "running", "", 0
                self._backoff = BACKOFF_FIRST_S
                old = sorted(set(self._alive_servers()) - set(self.servers))
                left = f"; server(s) {old} of the old one still run" if old else ""
                self.event(f"control daemon restarted (restart {self.restarts}){left}", logging.INFO)
            else:
                self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                self._next_restart = time.monotonic() + self._backoff
                LOG.error("MPS restart failed (%s); next try in %.1f s", self.reason, self._backoff)

    async def stop(self) -> None:
        """Quit a server we manage; an attached one belongs to someone else.

        ``quit`` ends the control daemon and its servers; a server left behind by a control daemon
        that was killed is not its to end any more, so fikitd ends it (SIGTERM, then SIGKILL)."""
        if self.mode != "manage" or self._binary is None or self.state not in ("running", "restarting"):
            return
        ok, out = await self._ask("quit", timeout=3.0)
        if not ok:
            LOG.warning("MPS quit: %s", out[:200])
        for _ in range(30):
            ok, _ = await self._ask("get_server_list", timeout=1.0)
            if not ok:
                break
            await asyncio.sleep(0.1)
        # quit's own servers end by themselves within a moment; within the daemon's 6 s for MPS
        for sig, wait_s in ((signal.SIGTERM, 1.5), (signal.SIGKILL, 1.0)):
            left = self._alive_servers()
            for _ in range(int(wait_s * 10)):
                if not left:
                    break
                await asyncio.sleep(0.1)
                left = self._alive_servers()
            for pid in left:
                LOG.warning("MPS server %d outlived its control daemon; sending it %s", pid, sig.name)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        self.state = "stopped"
        LOG.info("MPS control daemon stopped")

