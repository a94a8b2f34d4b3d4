"""The socket protocol of docs/design.md: NDJSON requests and replies, shared by daemon and CLI.

Everything here is pure (no daemon state, no other fikitd module) so that ``fikitctl`` can
import it on any host.  The daemon runs as root and every byte on its socket is untrusted,
so ``decode`` checks size, version, the op and each argument's type and range before a
handler ever sees the request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
MAX_MESSAGE = 64 * 1024  # bytes in one request line, newline included
MAX_REPLY = 16 * 1024 * 1024  # what the Client accepts from the daemon (logs, long job lists)
MAX_LOG_CHUNK = 1024 * 1024

ERROR_CODES = (
    "bad_request",
    "unsupported_version",
    "too_large",
    "not_found",
    "not_permitted",
    "unavailable",
    "internal",
)
JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "lost")
SCHED_MODES = ("fikit", "strict", "off")
PRIO_NAMES = {"high": 0, "normal": 1, "low": 2}
PRIO_MAX = 7
MAX_SLOTS = 64


class ProtocolError(Exception):
    """A request the daemon refuses; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class DaemonError(Exception):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{message} ({code})")


class DaemonUnreachable(Exception):
    """No daemon on the socket, or it went away mid-call."""


@dataclass(frozen=True)
class Request:
    op: str
    args: dict[str, Any]
    id: int | str | None = None


# --- argument checks ------------------------------------------------------------------------------

Check = Callable[[Any], Any]


def parse_prio(v: Any) -> int:
    """``high``/``normal``/``low`` or 0..7, smaller more urgent (as MPS client priorities are)."""
    if isinstance(v, str) and v in PRIO_NAMES:
        return PRIO_NAMES[v]
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= PRIO_MAX:
        return v
    raise ValueError("a priority: high, normal, low or 0..7")


def prio_name(p: int) -> str:
    for name, level in PRIO_NAMES.items():
        if level == p:
            return name
    return str(p)


def _int(lo: int, hi: int) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"an integer from {lo} to {hi}")
        return v

    return check


def _str(max_len: int, *, empty: bool = False) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or len(v) > max_len or (not empty and not v) or "\0" in v:
            raise ValueError(f"a string of 1 to {max_len} characters without NUL")
        return v

    return check


def _choice(options: tuple[str, ...]) -> Check:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError("one of " + ", ".join(options))
        return str(v)

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _abs_path(v: Any) -> str:
    if not isinstance(v, str) or not v.startswith("/") or "\0" in v or len(v) > 4096:
        raise ValueError("an absolute path")
    return v


def _argv(v: Any) -> list[str]:
    if (
        not isinstance(v, list)
        or not 1 <= len(v) <= 4096
        or not all(isinstance(a, str) and "\0" not in a for a in v)
        or not v[0]
    ):
        raise ValueError("a non-empty list of strings without NUL")
    return list(v)


def _env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > 4096:
        raise ValueError("an object of string values")
    for k, val in v.items():
        if not k or "=" in k or "\0" in k or not isinstance(val, str) or "\0" in val:
            raise ValueError("an object of string values (names without '=' or NUL)")
    return dict(v)


def job_id(v: Any) -> int:
    """Job ids are integers; the library's register message carries them as strings."""
    if isinstance(v, str) and v.isdigit() and len(v) <= 18:
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**62:
        return v
    raise ValueError("a job id (a positive integer)")


def _opt_job(v: Any) -> int | None:
    if v is None or v == "":
        return None
    return job_id(v)


@dataclass(frozen=True)
class Arg:
    check: Check
    required: bool = False


OPS: dict[str, dict[str, Arg]] = {
    "hello": {},
    "register": {
        "pid": Arg(_int(1, 2**31 - 1), True),
        "slot": Arg(_int(0, MAX_SLOTS - 1), True),
        "prio": Arg(parse_prio, True),
        "gpu": Arg(_int(0, 255), True),
        "prog": Arg(_str(255), True),
        "job": Arg(_opt_job),
    },
    "submit": {
        "argv": Arg(_argv),
        "script": Arg(_abs_path),
        "cwd": Arg(_abs_path),
        "env": Arg(_env),
        "prio": Arg(parse_prio),
        "name": Arg(_str(128)),
        "gpu": Arg(_int(0, 255)),
    },
    "jobs": {"all": Arg(_bool), "state": Arg(_choice(JOB_STATES))},
    "show": {"job": Arg(job_id, True)},
    "cancel": {"job": Arg(job_id, True)},
    "logs": {
        "job": Arg(job_id, True),
        "offset": Arg(_int(0, 2**62)),
        "max": Arg(_int(1, MAX_LOG_CHUNK)),
        "stream": Arg(_choice(("stdout", "stderr"))),
    },
    "status": {},
    "snapshot": {},
    "profiles": {"action": Arg(_choice(("list", "show", "rm")), True), "prog": Arg(_str(255))},
    # The scheduler of one GPU (or all): any of mode and the budgets, changed live; clients see it at
    # their next launch.  A reload of the config file sets them back to the file's values.
    "set_mode": {
        "gpu": Arg(_int(0, 255)),
        "mode": Arg(_choice(SCHED_MODES)),
        "budget_us": Arg(_int(0, 1_000_000)),
        "idle_us": Arg(_int(0, 10_000_000)),
        "corun_sm_pct": Arg(_int(0, 100)),
    },
    "set_prio": {"pid": Arg(_int(1, 2**31 - 1), True), "prio": Arg(parse_prio, True)},
}


def _request_id(v: Any) -> int | str | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and -(2**53) < v < 2**53:
        return v
    if isinstance(v, str) and len(v) <= 128:
        return v
    raise ProtocolError("bad_request", "id must be an integer or a string of at most 128 characters")


def peek_id(line: bytes) -> int | str | None:
    """The id of a request that failed validation, so the error reply still carries it."""
    try:
        msg = json.loads(line)
        return _request_id(msg.get("id")) if isinstance(msg, dict) else None
    except (ValueError, ProtocolError, RecursionError):
        return None


def decode(line: bytes) -> Request:
    """Validate one request line; raise ProtocolError saying exactly what is wrong."""
    if len(line) > MAX_MESSAGE:
        raise ProtocolError("too_large", f"a request is at most {MAX_MESSAGE} bytes")
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError("bad_request", f"not JSON: {exc}"[:200]) from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_request", "a request is a JSON object")
    rid = _request_id(msg.get("id"))
    if "v" not in msg:
        raise ProtocolError("bad_request", 'missing "v" (protocol version)')
    if msg["v"] != VERSION or isinstance(msg["v"], bool):
        raise ProtocolError("unsupported_version", f"this daemon speaks protocol version {VERSION}")
    op = msg.get("op")
    if not isinstance(op, str) or op not in OPS:
        shown = op if isinstance(op, str) and len(op) <= 40 else "?"
        raise ProtocolError("bad_request", f"unknown op {shown!r}; known: {', '.join(OPS)}")
    schema = OPS[op]
    args: dict[str, Any] = {}
    for key, value in msg.items():
        if key in ("v", "op", "id"):
            continue
        spec = schema.get(key)
        if spec is None:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise ProtocolError("bad_request", f"{op}: unknown argument {shown!r}")
        try:
            args[key] = spec.check(value)
        except ValueError as exc:
            raise ProtocolError("bad_request", f"{op}: {key} must be {exc}") from None
    for key, spec in schema.items():
        if spec.required and key not in args:
            raise ProtocolError("bad_request", f"{op}: missing argument {key!r}")
    if op == "submit" and ("argv" in args) == ("script" in args):
        raise ProtocolError("bad_request", "submit: give exactly one of argv or script")
    if op == "profiles" and args["action"] in ("show", "rm") and "prog" not in args:
        raise ProtocolError("bad_request", f"profiles: {args['action']} needs prog")
    return Request(op, args, rid)


def encode(obj: dict[str, Any]) -> bytes:
    """One line of compact JSON; ASCII-only so a reader never splits a character."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def request(op: str, rid: int | str | None = None, **args: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"v": VERSION, "op": op, **args}
    if rid is not None:
        msg["id"] = rid
    return msg


def ok(result: dict[str, Any], rid: int | str | None = None) -> dict[str, Any]:
    return {"v": VERSION, "id": rid, "ok": True, "result": result}


def error(code: str, message: str, rid: int | str | None = None) -> dict[str, Any]:
    return {"v": VERSION, "id": rid, "ok": False, "error": {"code": code, "message": message}}


class Client:
    """A blocking client for one connection, as the CLI and tests use it."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 1

    def connect(self) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            why = f"cannot connect to fikitd at {self.path}: {exc.strerror or exc}"
            raise DaemonUnreachable(why) from None
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its result; DaemonError on an error reply."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        rid = self._next_id
        self._next_id += 1
        try:
            self._sock.sendall(encode(request(op, rid, **args)))
            reply = self._read_line()
        except OSError as exc:
            self.close()
            raise DaemonUnreachable(f"fikitd at {self.path}: {exc.strerror or exc}") from None
        try:
            msg = json.loads(reply)
        except ValueError:
            raise DaemonUnreachable("fikitd sent a reply that is not JSON") from None
        if not isinstance(msg, dict):
            raise DaemonUnreachable("fikitd sent a reply that is not an object")
        if msg.get("ok") is True and isinstance(msg.get("result"), dict):
            result: dict[str, Any] = msg["result"]
            return result
        err = msg.get("error")
        if not isinstance(err, dict):
            err = {}
        raise DaemonError(str(err.get("code", "internal")), str(err.get("message", "unknown error")))

    def _read_line(self) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_REPLY:
                raise DaemonUnreachable("fikitd reply too large")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise DaemonUnreachable("fikitd closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line
