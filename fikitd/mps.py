"""The NVIDIA MPS control daemon: started and supervised (manage), used (attach) or not (none).

All MPS clients share one server per pipe directory; fikit gives the managed one its own
pipe and log directories so it never collides with an MPS the operator runs by hand.  The
control daemon forks itself into the background (``-d``), so it is watched by asking it a
question (``get_server_list``) rather than by waiting on a pid.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

from . import log
from .config import Config

LOG = log.get("mps")

PROBE_INTERVAL_S = 2.0
FAILURES_BEFORE_RESTART = 2
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0
START_WAIT_S = 20.0


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
        }

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
        else:
            self.reason = f"control daemon does not answer: {out[:200]}"
        return ok

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
                    LOG.error("MPS attach: the server went away: %s", self.reason)
                self.state = "down"
                return
            LOG.error("MPS control daemon died (%s); restarting in %.1f s", self.reason, self._backoff)
            self.state = "restarting"
            self._next_restart = time.monotonic() + self._backoff
            return
        if self.state == "restarting" and time.monotonic() >= self._next_restart:
            self.restarts += 1
            if await self._launch():
                LOG.info("MPS control daemon restarted (restart %d)", self.restarts)
                self.state, self.reason, self._failures = "running", "", 0
                self._backoff = BACKOFF_FIRST_S
            else:
                self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                self._next_restart = time.monotonic() + self._backoff
                LOG.error("MPS restart failed (%s); next try in %.1f s", self.reason, self._backoff)

    async def stop(self) -> None:
        """Quit a server we manage; an attached one belongs to someone else."""
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
        self.state = "stopped"
        LOG.info("MPS control daemon stopped")

