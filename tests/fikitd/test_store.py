"""The SQLite store: WAL, migrations with a backup first, a corrupt file moved aside."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from daemon_fixture import start_daemon

from fikitd import store as store_mod
from fikitd.store import Store

KERNEL = {"id": "00000000deadbeef", "name": "gemm", "count": 10, "grid": [4, 1, 1], "block": [128, 1, 1],
          "dur_us": {"mean": 10.0, "p50": 9.0, "p99": 20.0}, "gap_us": {"mean": 5.0, "p50": 4.0, "p99": 9.0},
          "dur_ring_ns": [9000, 11000], "gap_ring_ns": [4000]}


def test_wal_and_version(tmp_path: Path) -> None:
    s = Store(tmp_path / "fikit.db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.version() == len(store_mod.MIGRATIONS)


def test_profiles_merge_by_launch_count(tmp_path: Path) -> None:
    s = Store(tmp_path / "fikit.db")
    assert s.merge_kernels("train.py", [KERNEL, {**KERNEL, "id": "not-hex"}]) == 1
    s.merge_kernels("train.py", [{**KERNEL, "count": 30, "dur_us": {"mean": 30.0, "p50": 29.0, "p99": 40.0},
                                  "dur_ring_ns": []}])
    (k,) = s.kernels("train.py")
    assert k["count"] == 40 and k["dur_us"]["mean"] == 25.0 and k["dur_us"]["p50"] == 29.0
    assert k["dur_ring_ns"] == [9000, 11000]  # an empty ring keeps the stored samples
    assert k["grid"] == [4, 1, 1] and k["id"] == "00000000deadbeef"
    assert s.programs()[0]["prog"] == "train.py" and s.remove_profile("train.py") == 1


def test_migration_backs_up_first(tmp_path: Path) -> None:
    path = tmp_path / "fikit.db"
    s = Store(path)
    s.add_job(name="a", user="root", uid=0, gid=0, argv=["x"], cwd="/", prio=1, gpu=0, state="done",
              submitted_at=1.0, log_dir="/l")
    s.close()

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE jobs ADD COLUMN note TEXT")

    s2 = Store(path, migrations=[*store_mod.MIGRATIONS, v2])
    assert s2.version() == len(store_mod.MIGRATIONS) + 1
    backup = path.with_name(f"fikit.db.v{len(store_mod.MIGRATIONS)}.bak")
    assert backup.exists()
    old = sqlite3.connect(backup)
    assert old.execute("SELECT version FROM schema_version").fetchone()[0] == len(store_mod.MIGRATIONS)
    assert old.execute("SELECT name FROM jobs").fetchall() == [("a",)]
    assert s2.job(1)["name"] == "a" and "note" in s2.job(1)  # type: ignore[index,operator]
    assert any("migrated" in e for e in s2.events)


def test_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "fikit.db"
    Store(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE jobs ADD COLUMN half TEXT")
        raise RuntimeError("boom")

    with contextlib.suppress(RuntimeError):
        Store(path, migrations=[*store_mod.MIGRATIONS, broken])
    s = Store(path)
    assert s.version() == len(store_mod.MIGRATIONS)
    assert "half" not in [r[1] for r in s.db.execute("PRAGMA table_info(jobs)")]


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "fikit.db"
    path.write_bytes(b"this is not a database" * 100)
    s = Store(path)
    assert s.version() == len(store_mod.MIGRATIONS)
    aside = list(tmp_path.glob("fikit.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert any("moved unreadable store aside" in e for e in s.events)


def test_daemon_starts_on_a_corrupt_store(fk_root: Path) -> None:
    (fk_root / "state").mkdir()
    (fk_root / "state" / "fikit.db").write_bytes(b"\0garbage" * 1000)
    d = start_daemon(fk_root)
    try:
        events = d.call("status")["daemon"]["store_events"]
        assert any("moved unreadable store aside" in e for e in events)
        assert "unreadable" in d.log()
        assert d.call("submit", argv=["true"], cwd="/")["job"]["id"] == 1
    finally:
        assert d.stop() == 0
        d.close()


def test_refused_write_says_where_what_and_how_to_fix(tmp_path: Path) -> None:
    """A write the disk refuses is a StoreWriteError naming the file and the fix; nothing half-written."""
    path = tmp_path / "fikit.db"
    s = Store(path)
    job = dict(name="a", user="root", uid=0, gid=0, argv=["x"], cwd="/", prio=1, gpu=0, state="done",
               submitted_at=1.0, log_dir="")
    s.add_job(**job)
    s.db.close()
    s.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)  # as if read-only
    try:
        with s.transaction("cannot record the job"):
            s.add_job(**job)
        raise AssertionError("a write to a read-only store went through")
    except store_mod.StoreWriteError as exc:
        assert exc.message.startswith(f"cannot record the job: writing {path} failed (attempt to write a "
                                      "readonly database"), exc.message
        assert f"To fix: make {tmp_path} and its files writable by fikitd" in exc.message
    assert not s.db.in_transaction
    s.close()
    assert [j["id"] for j in Store(path).jobs()] == [1]
