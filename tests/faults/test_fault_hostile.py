"""Hostile input: socket fuzzing, authorisation and file modes, config fuzzing.

Socket: >= 10,000 generated messages (malformed JSON, wrong types, unknown versions and ops, oversized,
truncated, binary), each on its own connection; every reply is a well-formed protocol reply (an error
for anything invalid) or the connection is closed; the daemon never dies, and a second connection's
``hello`` keeps answering within a bound throughout.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_fixture import REPO, DaemonProc
from helpers import NOBODY, call_as, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fikitd import config
from fikitd.protocol import ERROR_CODES, MAX_MESSAGE, OPS, Client

BATCH = 25
EXAMPLES = 420  # x BATCH messages >= 10,000
HELLO_BOUND_S = 1.0

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ops = st.sampled_from([*OPS, "", "HELLO", "x" * 100, "submit\n"])
_keys = st.sampled_from(sorted({k for args in OPS.values() for k in args} | {"v", "op", "id", "zzz"}))


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:  # arbitrary bytes, maybe with newlines
        return draw(st.binary(max_size=300))
    if kind == 1:  # valid JSON that is not a request
        return json.dumps(draw(_json)).encode()
    msg: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 0, 2, "1", True, None, 1.0])),
        "op": draw(_ops),
    }
    for k in draw(st.lists(_keys, max_size=5)):
        msg[k] = draw(_json)
    line = json.dumps(msg).encode()
    if kind == 2:  # truncated
        return line[: draw(st.integers(0, max(0, len(line) - 1)))]
    if kind == 3:  # oversized
        return b'{"v":1,"op":"hello","pad":"' + b"a" * (MAX_MESSAGE + draw(st.integers(0, 1000))) + b'"}'
    if kind == 4:  # deep nesting
        n = draw(st.integers(100, 5000))
        return b'{"v":1,"op":"hello","id":' + b"[" * n + b"]" * n + b"}"
    return line


def _one(sock_path: Path, data: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        try:
            s.sendall(data + b"\n")
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # dropped mid-send: allowed
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
    return [json.loads(ln) for ln in buf.splitlines()]


def test_socket_fuzz(fikitd_daemon: DaemonProc, figures: dict[str, Any]) -> None:
    d = fikitd_daemon
    stop = threading.Event()
    hello_s: list[float] = []

    def prober() -> None:
        with Client(d.socket, timeout=5) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                c.call("hello")
                hello_s.append(time.monotonic() - t0)
                time.sleep(0.02)

    th = threading.Thread(target=prober, daemon=True)
    th.start()
    counts = {"messages": 0, "replies": 0, "errors": 0, "dropped": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(_message(), min_size=BATCH, max_size=BATCH))
    def fuzz(batch: list[bytes]) -> None:
        for data in batch:
            counts["messages"] += 1
            replies = _one(d.socket, data)
            if not replies:
                counts["dropped"] += 1
            for r in replies:
                assert set(r) == {"v", "id", "ok", "result"} or set(r) == {"v", "id", "ok", "error"}, r
                counts["replies"] += 1
                if not r["ok"]:
                    assert r["error"]["code"] in ERROR_CODES and r["error"]["code"] != "internal", (
                        data[:200],
                        r,
                    )
                    counts["errors"] += 1

    try:
        fuzz()
    finally:
        stop.set()
        th.join(10)
    assert counts["messages"] >= 10_000
    assert d.proc is not None and d.proc.poll() is None
    assert hello_s and max(hello_s) < HELLO_BOUND_S, max(hello_s)
    assert "Traceback" not in d.log()
    figures.update(counts, hello_ms_max=round(max(hello_s) * 1e3, 1), hello_probes=len(hello_s))


def _modes(root: Path) -> list[tuple[str, str, int, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            s = p.lstat()
            out.append(
                (str(p.relative_to(root)), stat.filemode(s.st_mode), s.st_uid, oct(s.st_mode & 0o7777))
            )
    return out


def test_authorisation_and_modes(fikitd_daemon: DaemonProc, figures: dict[str, Any]) -> None:
    d = fikitd_daemon
    env = {"PATH": "/usr/bin:/bin"}
    mine = call_as(NOBODY, d.socket, "submit", argv=["sh", "-c", "id -u; sleep 30"], cwd="/", env=env)["job"]
    roots = d.call("submit", argv=["sh", "-c", "id -u; echo secret"], cwd="/", env=env)["job"]
    try:
        # the other user's job: invisible, not cancellable, logs unreadable, through every op
        other = 65533
        for op, args in [
            ("show", {"job": mine["id"]}),
            ("cancel", {"job": mine["id"]}),
            ("logs", {"job": mine["id"]}),
            ("logs", {"job": roots["id"], "stream": "stderr"}),
        ]:
            assert call_as(other, d.socket, op, **args)["error"] == "not_permitted", op
        assert call_as(other, d.socket, "jobs", all=True)["jobs"] == []
        assert (
            call_as(other, d.socket, "submit", argv=["true"], cwd="/", prio="high")["error"]
            == "not_permitted"
        )
        assert call_as(other, d.socket, "submit", argv=["true"], cwd="/", prio=0)["error"] == "not_permitted"
        # job commands run as the submitter, never as root
        out = wait_until(lambda: d.call("logs", job=mine["id"])["data"], what="job output")
        assert out.split()[0] == str(NOBODY)
        # files: who can write what
        wait_until(lambda: d.call("show", job=roots["id"])["job"]["state"] == "done", what="root job done")
        logs = Path(roots["log_dir"])
        for name in ("stdout", "stderr"):
            s = (logs / name).stat()
            assert s.st_uid == 0 and s.st_mode & 0o007 == 0, (name, oct(s.st_mode))
        assert (logs.stat().st_mode & 0o007) == 0
        problems = []
        for rel, mode, uid, octal in _modes(d.root / "run") + _modes(d.root / "state"):
            perm = int(octal, 8)
            if rel == "fikitd.sock":
                assert mode.startswith("s") and perm == 0o666  # anyone may talk; ops decide
            elif rel == "gpu0":
                assert perm == 0o1777 and uid == 0
            elif rel.startswith("jobs/") and rel.endswith("/exit"):
                # the wrapper writes the exit status as the user: theirs, in a root-owned 0750 directory
                assert perm == 0o640 and uid in (0, NOBODY), (rel, octal, uid)
            elif mode.startswith("d"):
                if perm & 0o022 or uid != 0:
                    problems.append((rel, octal, uid))
            elif perm & 0o022 or uid != 0:
                problems.append((rel, octal, uid))
        assert not problems, f"files others could write: {problems}"
        figures.update(checked=[m[0] for m in _modes(d.root / "run")])
    finally:
        d.call("cancel", job=mine["id"])


def test_slot_of_another_client_not_writable(
    fikitd_daemon: DaemonProc, fake_build: Any, libfikit: Path
) -> None:
    """A client's slot file is its own: 0644, owned by it; another user can neither write nor replace it."""
    d = fikitd_daemon
    dom = d.root / "run" / "gpu0"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_"))}
    env.update(
        LD_LIBRARY_PATH=str(fake_build.fake_dir),
        LD_PRELOAD=str(libfikit),
        FIKIT_DOMAIN=str(dom),
        FIKIT_SOCKET=str(d.socket),
        FIKIT_PRIO="high",
        PYTHONPATH=str(REPO),
    )
    ready = d.root / "ready"
    p = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "fakecuda" / "workload.py"),
            "--kernels",
            "k:1000",
            "--repeat",
            "0",
            "--seconds",
            "20",
            "--ready",
            str(ready),
            "--until",
            str(d.root / "stop"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(ready.exists, what="client ready")
        slot = next(dom.glob("slot.*"))
        s = slot.stat()
        assert s.st_uid == 0 and oct(s.st_mode & 0o777) == "0o644"
        path = str(slot)

        def attack() -> list[str]:
            out = []
            for how in ("write", "unlink", "rename"):
                try:
                    if how == "write":
                        os.open(path, os.O_WRONLY)
                    elif how == "unlink":
                        os.unlink(path)
                    else:
                        os.rename(path, path + ".x")
                    out.append(how)
                except PermissionError:
                    pass
            for name in ("domain",):
                try:
                    os.open(str(dom / name), os.O_WRONLY)
                    out.append(name)
                except PermissionError:
                    pass
            return out

        assert call_as_fn(NOBODY, attack) == []
    finally:
        (d.root / "stop").touch()
        p.communicate(timeout=30)


def call_as_fn(uid: int, fn: Callable[[], Any]) -> Any:
    from helpers import as_user

    return as_user(uid, fn)


_toml_value = st.one_of(
    st.integers(-10, 10**6),
    st.text(max_size=12).map(json.dumps),
    st.booleans().map(str).map(str.lower),
    st.just("[1, 2]"),
    st.just('["a", 3]'),
    st.just("{x = 1}"),
    st.just("1.5"),
    st.just(""),
    st.just('"/abs/path"'),
    st.just("nan"),
)
_sections = st.sampled_from(["paths", "mps", "scheduler", "access", "metrics", "schedular", "paths.x", ""])
_cfg_keys = st.sampled_from(
    [
        "runtime_dir",
        "state_dir",
        "mode",
        "control",
        "budget_us",
        "idle_us",
        "min_lp_share",
        "high_users",
        "listen",
        "enabled",
        "unknown",
        "corun_sm_pct",
        "a b",
        "=",
    ]
)


@st.composite
def _config(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        sec = draw(_sections)
        if sec:
            lines.append(f"[{sec}]")
        for _ in range(draw(st.integers(0, 3))):
            lines.append(f"{draw(_cfg_keys)} = {draw(_toml_value)}")
        if draw(st.booleans()):
            lines.append(draw(st.text(max_size=15)))
    return "\n".join(lines) + "\n"


def test_config_fuzz(tmp_path: Path, figures: dict[str, Any]) -> None:
    refused = 0
    accepted = 0
    path = "/etc/fikit/fikit.toml"

    @settings(
        max_examples=600,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(_config())
    def fuzz(text: str) -> None:
        nonlocal refused, accepted
        try:
            config.parse(text, path)
            accepted += 1
        except config.ConfigError as exc:
            refused += 1
            for line in str(exc).splitlines():
                assert line.startswith(f"{path}:"), (text, str(exc))
                _, lineno, rest = line.split(":", 2)
                assert lineno.isdigit() and 1 <= int(lineno) <= text.count("\n") + 1, (text, line)
                assert rest.strip() and ":" in rest, (text, line)  # "<key>: expected ..."

    fuzz()
    # and through the command line, for a few: an error message, exit 1, never a traceback
    for i, text in enumerate(
        ["[scheduler]\nbudget_us = -1\n", "[[x]]\n", "a = \n", "\x00\n", "[paths]\nx = 1\n"]
    ):
        f = tmp_path / f"c{i}.toml"
        f.write_bytes(text.encode())
        p = subprocess.run(
            [sys.executable, "-m", "fikitd.main", "--check-config", str(f)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.startswith(f"{f}:"), p.stderr
    figures.update(configs=refused + accepted, refused=refused, accepted=accepted)
