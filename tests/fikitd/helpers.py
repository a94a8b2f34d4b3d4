"""Small helpers shared by the daemon tests: raw socket talk, acting as another user, waiting."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fikitd.protocol import Client, DaemonError

NOBODY = 65534


def raw(sock_path: Path, data: bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send bytes as they are; return every reply line until the daemon closes or goes quiet."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            buf += chunk
    return [json.loads(line) for line in buf.splitlines() if line.strip()]


def start_as_user(uid: int, fn: Callable[[], Any]) -> tuple[int, int]:
    """Start ``fn`` in a forked child that dropped to uid (gid = uid); (pid, read end of its result).

    Forked rather than exec'd: the test interpreter may live where that user cannot read it.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            if uid:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            data = json.dumps(fn()).encode()
            code = 0
        except BaseException as exc:
            data = json.dumps({"child_error": repr(exc)}).encode()
        finally:
            while data:
                data = data[os.write(w, data):]
            os._exit(code)
    os.close(w)
    return pid, r


def collect_as_user(pid: int, r: int, timeout: float = 20.0) -> Any:
    """The JSON-able result of a child of start_as_user, checked to have succeeded."""
    deadline = time.monotonic() + timeout
    with os.fdopen(r, "rb") as f:
        data = f.read()
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    result = json.loads(data)
    assert not (isinstance(result, dict) and "child_error" in result), result
    return result


def as_user(uid: int, fn: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run ``fn`` as uid in a forked child and return its JSON-able result."""
    return collect_as_user(*start_as_user(uid, fn), timeout=timeout)


def call_as(uid: int, sock: Path, op: str, **args: Any) -> dict[str, Any]:
    """One request as another user: the result, or {"error": code, "message": ...}."""

    def fn() -> dict[str, Any]:
        try:
            with Client(sock) as c:
                return c.call(op, **args)
        except DaemonError as e:
            return {"error": e.code, "message": e.message}

    result: dict[str, Any] = as_user(uid, fn)
    return result


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
