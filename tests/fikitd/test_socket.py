"""Hostile and unauthorised messages: the daemon answers each, drops what is too big, survives."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from daemon_fixture import DaemonProc, start_daemon
from helpers import NOBODY, call_as, raw


def test_malformed_messages_get_error_replies(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    lines = [
        b"garbage",
        b"\xff\xfe\x00",
        b'{"v": 1}',
        b'{"v": 9, "op": "hello", "id": 5}',
        b'{"v": 1, "op": "format_disk", "id": "x"}',
        b'{"v": 1, "op": "show", "job": "abc"}',
        b'{"v": 1, "op": "hello", "id": 1}',
    ]
    replies = raw(d.socket, b"\n".join(lines) + b"\n")
    assert len(replies) == len(lines)
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]
    assert codes == ["bad_request", "bad_request", "bad_request", "unsupported_version", "bad_request",
                     "bad_request", "ok"]
    assert replies[3]["id"] == 5 and replies[4]["id"] == "x" and replies[6]["id"] == 1
    assert d.call("hello")["protocol"] == 1


def test_oversized_message_drops_the_connection(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    big = b'{"v": 1, "op": "hello", "pad": "' + b"a" * 70000 + b'"}\n'
    replies = raw(d.socket, big + b'{"v":1,"op":"hello"}\n')
    assert len(replies) == 1 and replies[0]["error"]["code"] == "too_large"
    # exactly at the limit is still a request (rejected for its unknown argument, not its size)
    line = b'{"v": 1, "op": "hello", "pad": "' + b"a" * (65536 - 36) + b'"}\n'
    assert len(line) <= 65536
    assert raw(d.socket, line)[0]["error"]["code"] == "bad_request"
    assert d.call("hello")["protocol"] == 1


def test_a_silent_client_blocks_no_one(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    stuck = []
    for _ in range(20):  # half-sent lines, never finished, and a client that never reads
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(d.socket))
        s.sendall(b'{"v": 1, "op": "hel')
        stuck.append(s)
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(str(d.socket))
    hog.setblocking(False)
    try:
        for _ in range(2000):
            hog.send(b'{"v":1,"op":"status"}\n')
    except BlockingIOError:
        pass
    t0 = time.monotonic()
    assert d.call("hello")["protocol"] == 1
    assert time.monotonic() - t0 < 2
    for s in [*stuck, hog]:
        s.close()
    assert d.call("status")["daemon"]["pid"] == d.pid


def test_unauthorised_requests(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    job = d.call("submit", argv=["sleep", "30"], cwd="/")["job"]
    try:
        assert call_as(NOBODY, d.socket, "hello")["uid"] == NOBODY
        for op, args in [("show", {"job": job["id"]}), ("cancel", {"job": job["id"]}),
                         ("logs", {"job": job["id"]}), ("set_mode", {"mode": "off"}),
                         ("profiles", {"action": "rm", "prog": "x"}),
                         ("submit", {"argv": ["true"], "cwd": "/", "prio": "high"})]:
            assert call_as(NOBODY, d.socket, op, **args)["error"] == "not_permitted", op
        assert call_as(NOBODY, d.socket, "jobs", all=True)["jobs"] == []  # root's job is not listed
        assert d.call("show", job=job["id"])["job"]["state"] == "running"
        assert call_as(NOBODY, d.socket, "set_prio", pid=1, prio=0)["error"] == "not_found"
    finally:
        d.call("cancel", job=job["id"])


def test_high_priority_granted_by_access(fk_root: Path) -> None:
    d = start_daemon(fk_root, extra='[access]\nhigh_users = ["nobody"]\n')
    try:
        r = call_as(NOBODY, d.socket, "submit", argv=["true"], cwd="/", prio="high")
        assert r["job"]["prio"] == 0 and r["job"]["uid"] == NOBODY
    finally:
        assert d.stop() == 0
        d.close()
