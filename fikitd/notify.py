"""systemd notifications (sd_notify) through the sdnotify package.

Without ``NOTIFY_SOCKET`` (run by hand, in CI, in a container) every call is a no-op, so
the daemon's code never asks whether systemd is there. Where sdnotify is not installed, a
few lines of our own send the same datagram (sd_notify(3) is one ``sendto`` on a Unix socket).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from . import log

LOG = log.get("notify")


class _Datagram:
    """sd_notify without the sdnotify package: one datagram to ``NOTIFY_SOCKET``."""

    def __init__(self, address: str) -> None:
        # "@name" is Linux's abstract namespace, written with a leading NUL byte
        self.address = "\0" + address[1:] if address.startswith("@") else address

    def notify(self, state: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), self.address)


class Notifier:
    def __init__(self) -> None:
        self._notifier = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                import sdnotify

                self._notifier = sdnotify.SystemdNotifier()
            except ImportError:
                self._notifier = _Datagram(os.environ["NOTIFY_SOCKET"])
        self.watchdog_s = self._watchdog_interval()

    @staticmethod
    def _watchdog_interval() -> float | None:
        """Half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) recommends; None if not asked for us."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, *lines: str) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.notify("\n".join(lines))
        except Exception as exc:  # a vanished socket must never take the daemon down
            LOG.debug("sd_notify failed: %s", exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration")


class NotifyListener:
    """The receiving end of these messages, standing in for systemd where fikitd runs under another
    supervisor: the benchmark harness on the GPU machine (PID 1 is not systemd there) and the tests.
    A SOCK_DGRAM socket whose every message is kept with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode(errors="replace").splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self) -> list[str]:
        return [m for _, m in self.messages]

    def has(self, prefix: str) -> bool:
        return any(m.startswith(prefix) for m in self.lines())

    def wait_for(self, pred: Callable[[str], bool] | str, timeout: float = 10.0) -> str:
        check = (lambda m: m == pred) if isinstance(pred, str) else pred
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            msgs = self.lines()
            for m in msgs[seen:]:
                if check(m):
                    return m
            seen = len(msgs)
            time.sleep(0.02)
        raise AssertionError(f"no notify message matching {pred!r}; got {self.lines()}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        self.sock.close()
