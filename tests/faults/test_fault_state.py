"""Faults of the daemon's files: full disk, read-only state directory, corrupt store, truncated WAL,
wrong permissions on the runtime directory, stale or bogus socket path, a second daemon.

Full disk is simulated without mounts: RLIMIT_FSIZE set on the running daemon (prlimit) makes every
write past the limit fail with EFBIG, as a full file system fails with ENOSPC.  Read-only state
directory: the daemon runs as nobody (forked, then setuid, since the interpreter lives under /root)
against a root-owned 0755 state directory; root itself cannot be kept out of a directory without a mount.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_fixture import REPO, DaemonProc, config_text, start_daemon
from helpers import NOBODY

from fikitd.protocol import Client, DaemonError

ENV = {"PATH": "/usr/bin:/bin"}


def ids(d: DaemonProc) -> list[int]:
    return [j["id"] for j in d.call("jobs", all=True)["jobs"]]


def test_disk_full_refuses_with_a_reason_and_recovers(
    daemon: Callable[..., DaemonProc], figures: dict[str, Any]
) -> None:
    d = daemon()
    for _ in range(3):
        d.call("submit", argv=["true"], cwd="/", env=ENV)
    state = d.root / "state"
    biggest = max(p.stat().st_size for p in [*state.iterdir(), d.stderr_path] if p.is_file())
    resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (biggest + 4096, resource.RLIM_INFINITY))
    accepted: list[int] = []
    refused: list[str] = []
    with Client(d.socket) as c:
        for _ in range(400):
            try:
                accepted.append(c.call("submit", argv=["true"], cwd="/", env=ENV)["job"]["id"])
            except DaemonError as e:
                refused.append(f"{e.code}: {e.message}")
                if len(refused) >= 5:
                    break
    assert refused, "the size limit never bit"
    assert all("full" in r or "File too large" in r or "disk" in r for r in refused), refused
    assert d.proc is not None and d.proc.poll() is None, "daemon died on a full disk"
    assert d.call("hello")["protocol"] == 1
    listed = ids(d)
    resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    after = d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]
    final = ids(d)
    assert set(accepted) <= set(final), "an accepted job's record was lost"
    assert after["id"] in final and len(final) == len(set(final))
    figures.update(accepted_before_full=len(accepted), refusals=refused[:1], listed_while_full=len(listed))
    assert d.stop() == 0


def _run_as(uid: int, argv: list[str], stderr: Path, env: dict[str, str]) -> int:
    """fikitd.main.main(argv) in a forked child running as uid; its exit code (within 20 s).

    Everything is imported before the fork: the standard library lives where nobody cannot read."""
    import fikitd.daemon
    import fikitd.main
    import fikitd.shm  # noqa: F401

    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
            os.dup2(fd, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.environ.clear()
            os.environ.update(env)
            from fikitd.main import main

            code = main(argv)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("fikitd as nobody did not exit")
        time.sleep(0.05)


def test_read_only_state_dir_refused_clearly(fk_root: Path, figures: dict[str, Any]) -> None:
    run, state = fk_root / "run", fk_root / "state"
    run.mkdir()
    os.chown(run, NOBODY, NOBODY)
    (fk_root / "log").mkdir()
    os.chown(fk_root / "log", NOBODY, NOBODY)
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    state.chmod(0o555)  # the daemon's own directory, read-only
    cfg = fk_root / "fikit.toml"
    cfg.write_text(config_text(fk_root))
    err = fk_root / "err"
    env = {"PATH": "/usr/bin:/bin", "FIKIT_LIBRARY": os.environ.get("FIKIT_LIBRARY", "")}
    rc = _run_as(NOBODY, ["--config", str(cfg)], err, env)
    text = err.read_text()
    assert rc == 1, text
    assert "cannot start" in text and str(state) in text, text
    assert "Permission denied" in text, text
    assert "Traceback" not in text
    figures.update(message=text.strip().splitlines()[-1][-160:])


def _kill_and(d: DaemonProc, n_jobs: int) -> list[int]:
    for _ in range(n_jobs):
        d.call("submit", argv=["true"], cwd="/", env=ENV)
    before = ids(d)
    d.kill9()
    return before


def test_corrupt_store_moved_aside(daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    _kill_and(d, 5)
    db = d.root / "state" / "fikit.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    raw = bytearray(db.read_bytes())
    for off in range(100, len(raw), 997):
        raw[off] = (raw[off] + 0x5A) & 0xFF
    db.write_bytes(bytes(raw))
    d.start()
    st = d.call("status")["daemon"]
    assert any("moved unreadable store aside" in e for e in st["store_events"]), st
    assert list((d.root / "state").glob("fikit.db.corrupt-*")), "the damaged file was not kept"
    assert d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]["id"] >= 1
    assert "Traceback" not in d.log()
    assert d.stop() == 0


def test_truncated_wal_keeps_a_consistent_prefix(
    daemon: Callable[..., DaemonProc], figures: dict[str, Any]
) -> None:
    d = daemon()
    before = _kill_and(d, 30)
    wal = d.root / "state" / "fikit.db-wal"
    size = wal.stat().st_size
    assert size > 0, "nothing in the WAL to truncate"
    with open(wal, "r+b") as f:
        f.truncate(size // 2 + 13)  # mid-frame
    d.start()
    after = ids(d)
    assert after == before[: len(after)], "the store is not a prefix of what was committed"
    check = sqlite3.connect(d.root / "state" / "fikit.db").execute("PRAGMA quick_check").fetchone()[0]
    assert check == "ok"
    new = d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]["id"]
    assert new not in after
    figures.update(
        records_before=len(before),
        records_after=len(after),
        lost=len(before) - len(after),
        note="commits in the cut-off part of the WAL are lost",
    )
    assert d.stop() == 0


def test_runtime_dir_permissions_are_repaired_ownership_refused(daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    d.kill9()
    run = d.root / "run"
    dom = run / "gpu0"
    os.chown(run, NOBODY, NOBODY)  # whoever owns it could replace the socket or the domain
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == 1
    assert f"{run} is owned by uid {NOBODY}" in d.log() and "Traceback" not in d.log()
    d.proc = None
    os.chown(run, 0, 0)
    os.chmod(run, 0o777)
    os.chmod(dom, 0o700)
    d.start()
    assert oct(run.stat().st_mode & 0o7777) == "0o755"
    assert oct(dom.stat().st_mode & 0o7777) == "0o1777"
    assert oct(d.socket.stat().st_mode & 0o777) == "0o666"
    assert d.stop() == 0


def test_stale_socket_paths(daemon: Callable[..., DaemonProc]) -> None:
    d = daemon()
    d.kill9()
    assert d.socket.exists()  # left behind by kill -9
    d.start()
    assert d.call("hello")["protocol"] == 1
    d.kill9()
    d.socket.unlink()
    d.socket.write_text("not a socket\n")  # a regular file at the path: replaced as well
    d.start()
    assert d.call("hello")["protocol"] == 1
    d.kill9()
    d.socket.unlink()
    d.socket.mkdir()  # something fikitd must not delete: refused, saying what is in the way
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(20) == 1
    assert "cannot start" in d.log() and str(d.socket) in d.log()
    d.proc = None
    d.socket.rmdir()


def test_second_daemon_refused_first_unharmed(daemon: Callable[..., DaemonProc], fk_root: Path) -> None:
    d = daemon()
    second = subprocess.run(
        [sys.executable, "-m", "fikitd.main", "--config", str(d.config)],
        cwd=REPO,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert second.returncode == 1
    assert f"another fikitd (pid {d.pid})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert d.call("hello")["protocol"] == 1 and d.socket.exists()
    assert d.stop() == 0
    # a second one with its own state dir but the first one's socket: refused by the socket check
    d = start_daemon(fk_root)
    other = fk_root / "other"
    other.mkdir()
    text = config_text(other).replace(f'runtime_dir = "{other}/run"', f'runtime_dir = "{fk_root}/run"')
    (other / "fikit.toml").write_text(text)
    second = subprocess.run(
        [sys.executable, "-m", "fikitd.main", "--config", str(other / "fikit.toml")],
        cwd=REPO,
        env=d.env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert second.returncode == 1, second.stderr
    assert "in use" in second.stderr and "Traceback" not in second.stderr, second.stderr
    assert d.call("hello")["protocol"] == 1
    assert d.stop() == 0
    d.close()
