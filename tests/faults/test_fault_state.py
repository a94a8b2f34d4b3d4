"""Faults of the daemon's files: full disk, read-only state directory, corrupt store, truncated WAL,
wrong permissions on the runtime directory, stale or bogus socket path, a second daemon.

Full disk is simulated without mounts, two ways: RLIMIT_FSIZE set on the running daemon (prlimit)
makes every write past the limit fail with EFBIG; tests/faults/enospc.c (LD_PRELOAD) makes writes
under the state directory fail with ENOSPC, as a full file system does, while a flag file exists, so
that the disk can be full at start-up and fill up or free itself under a running daemon.  In every
case the refusal says which path, what failed and what to do, and no committed record is lost.
Read-only state directory: the daemon runs as nobody (forked, then setuid, since the interpreter lives
under /root) against a root-owned 0755 state directory; root itself cannot be kept out of a directory
without a mount.
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
from helpers import NOBODY, wait_until

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
    store = d.root / "state" / "fikit.db"
    for r in refused:
        assert r.startswith(f"unavailable: cannot record the job: writing {store} failed (disk I/O error"), r
        assert "fikitd's file size limit (RLIMIT_FSIZE) is" in r and "Nothing of this was recorded" in r, r
        assert f"To fix: free space in {store.parent}, or raise fikitd's file size limit" in r, r
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


def _full_disk(fk_root: Path, enospc: Path) -> tuple[Path, dict[str, str]]:
    """The flag that fills the state directory's "disk" (tests/faults/enospc.c), and the daemon's env."""
    flag = fk_root / "disk-full"
    return flag, {"LD_PRELOAD": str(enospc), "ENOSPC_DIR": str(fk_root / "state"), "ENOSPC_FLAG": str(flag)}


def test_disk_full_at_start_refused_clearly(fk_root: Path, enospc: Path, figures: dict[str, Any]) -> None:
    flag, env = _full_disk(fk_root, enospc)
    flag.touch()
    d = start_daemon(fk_root, env=env, wait=False)
    try:
        assert d.proc is not None and d.proc.wait(20) == 1
        state = fk_root / "state"
        log = d.log()
        line = next(ln for ln in log.splitlines() if "cannot start" in ln)
        db = state / "fikit.db"
        assert f"cannot start: cannot open the store: writing {db} failed (database or disk is full;" in line
        assert f"free on the file system of {state}" in line
        assert "What the store already holds is kept" in line
        assert f"To fix: free space in {state}, or point [paths] state_dir at a file system with room" in line
        assert "Traceback" not in log, log
        assert any(m.startswith("STATUS=failed to start: cannot open the store") for m in d.notify.lines())
        d.proc = None
        flag.unlink()  # space again: the same daemon starts, and works
        d.start()
        jobs = [d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]["id"] for _ in range(3)]
        wait_until(lambda: not d.call("jobs")["jobs"], timeout=5, what="the jobs end")
        assert d.stop() == 0
        # full again, now with a store that holds records: SQLite cannot even size its -shm file
        flag.touch()
        d.start(wait=False)
        assert d.proc is not None and d.proc.wait(20) == 1
        again = [ln for ln in d.log().splitlines() if "cannot start" in ln][-1]
        assert f"cannot start: cannot open the store: writing {db} failed (" in again, again
        assert "What the store already holds is kept" in again and "To fix: free space in" in again
        assert "Traceback" not in d.log()
        d.proc = None
        flag.unlink()
        d.start()
        assert ids(d) == jobs  # nothing committed was lost
        assert d.stop() == 0
        figures.update(message=line.split("fikitd.daemon: ", 1)[-1],
                       with_records=again.split("fikitd.daemon: ", 1)[-1])
    finally:
        d.close()


def test_disk_full_under_a_running_daemon(fk_root: Path, enospc: Path, figures: dict[str, Any]) -> None:
    flag, env = _full_disk(fk_root, enospc)
    d = start_daemon(fk_root, env=env)
    try:
        for _ in range(3):
            d.call("submit", argv=["true"], cwd="/", env=ENV)
        wait_until(lambda: not d.call("jobs")["jobs"], timeout=5, what="three quick jobs end")
        go = fk_root / "go"
        slow = d.call("submit", argv=["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"], cwd="/",
                      env=ENV)["job"]
        before = ids(d)
        flag.touch()
        try:
            d.call("submit", argv=["true"], cwd="/", env=ENV)
            raise AssertionError("a submit on a full disk was accepted")
        except DaemonError as e:
            refused = e
        store = fk_root / "state" / "fikit.db"
        assert refused.code == "unavailable", refused
        msg = refused.message
        assert msg.startswith(f"cannot record the job: writing {store} failed (database or disk is full"), msg
        assert "Nothing of this was recorded; what the store held before is kept" in msg, msg
        assert f"To fix: free space in {store.parent}" in msg, msg
        assert ids(d) == before and d.call("status")["daemon"]["jobs_running"] == 1
        # a job that ends while the disk is full: its end waits in memory, recorded once there is room
        go.touch()
        wait_until(lambda: "its end cannot be recorded yet" in d.log(), timeout=5, what="a failed write")
        assert d.call("show", job=slow["id"])["job"]["state"] == "running"
        flag.unlink()
        ended = wait_until(lambda: (lambda j: j if j["state"] == "done" else None)(
            d.call("show", job=slow["id"])["job"]), timeout=5, what="the end recorded")
        assert ended["exit_code"] == 0
        after = d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]["id"]
        final = ids(d)
        assert final == [*before, after], (before, final)
        assert d.log().count("its end cannot be recorded yet") == 1  # said once, not every 0.25 s
        assert "Traceback" not in d.log()
        figures.update(refusal=f"{refused.code}: {msg}")
        assert d.stop() == 0
    finally:
        d.close()
