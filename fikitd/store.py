"""The SQLite store under state_dir: job records and kernel measurements.

WAL mode so a crash (kill -9 included) loses at most the transaction in flight, and readers
(``status``) never wait on the writer.  The file is versioned: a newer daemon migrates an
older file after copying it aside, so an upgrade that goes wrong can be undone by hand.  A
file SQLite cannot read is moved aside rather than deleted: the operator may want it, and
the daemon must start either way.
"""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import log

LOG = log.get("store")

_KERNEL_ID = re.compile(r"[0-9a-f]{16}")

class CorruptStore(sqlite3.DatabaseError):
    pass


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Only damage moves the file aside; locked, read-only or full is the operator's to fix."""
    if isinstance(exc, CorruptStore):
        return True
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    text = str(exc)
    return "not a database" in text or "malformed" in text


# SQLite primary result codes that mean "the disk said no": full, I/O error, read-only, cannot open.
_FULL, _IOERR, _READONLY, _CANTOPEN = 13, 10, 8, 14
_WRITE_ERRORS = {
    _FULL: "database or disk is full", _IOERR: "disk I/O error",
    _READONLY: "attempt to write a readonly database", _CANTOPEN: "unable to open database file",
}


def _write_error_code(exc: BaseException) -> int | None:
    """The SQLite code of a failed write the operator can fix (room, permissions), else None."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return _FULL
        return _READONLY if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else _IOERR
    if not isinstance(exc, sqlite3.OperationalError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF if int(code) & 0xFF in _WRITE_ERRORS else None
    text = str(exc)
    return next((c for c, t in _WRITE_ERRORS.items() if t in text), None)


class StoreWriteError(Exception):
    """The state directory refused a write (full, a file size limit, read-only): said in words.

    The message names the path, what failed and what the operator can do; SQLite's transaction
    was rolled back, so nothing half-written is left and what was committed before is kept.
    """

    def __init__(self, path: Path, doing: str, exc: BaseException,
                 outcome: str = "Nothing of this was recorded; what the store held before is kept") -> None:
        self.path = path
        self.code = _write_error_code(exc)
        where = path.parent
        facts = []
        try:
            st = os.statvfs(where)
            facts.append(f"{_size(st.f_bavail * st.f_frsize)} free on the file system of {where}")
        except OSError:
            pass
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limited = soft != resource.RLIM_INFINITY
        if limited:
            facts.append(f"fikitd's file size limit (RLIMIT_FSIZE) is {_size(soft)}")
        if self.code in (_READONLY, _CANTOPEN):
            fix = f"make {where} and its files writable by fikitd (uid {os.geteuid()}), and check it has room"
        else:
            also = ", or raise fikitd's file size limit" if limited else ""
            fix = f"free space in {where}{also}, or point [paths] state_dir at a file system with room"
        detail = "; ".join([getattr(exc, "strerror", None) or str(exc), *facts])
        self.message = f"{doing}: writing {path} failed ({detail}). {outcome}. To fix: {fix}"
        super().__init__(self.message)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


_OPEN_OUTCOME = "What the store already holds is kept"

Migration = Callable[[sqlite3.Connection], None]


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run statements one by one: executescript would COMMIT the migration's transaction."""
    for stmt in sql.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _v1(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            user TEXT NOT NULL,
            uid INTEGER NOT NULL,
            gid INTEGER NOT NULL,
            argv TEXT NOT NULL,          -- JSON list
            cwd TEXT NOT NULL,
            prio INTEGER NOT NULL,
            gpu INTEGER NOT NULL,
            state TEXT NOT NULL,
            exit_code INTEGER,
            pid INTEGER,
            pid_start INTEGER,           -- /proc/<pid>/stat start time, guards against pid reuse
            submitted_at REAL NOT NULL,
            started_at REAL,
            ended_at REAL,
            log_dir TEXT NOT NULL,
            reason TEXT
        );
        CREATE INDEX jobs_state ON jobs(state);
        CREATE INDEX jobs_uid ON jobs(uid);
        CREATE TABLE profiles (
            prog TEXT NOT NULL,
            kernel_id TEXT NOT NULL,     -- 16 hex digits
            name TEXT NOT NULL,
            count INTEGER NOT NULL,
            grid TEXT NOT NULL,          -- JSON [x, y, z]
            block TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'kernel',
            smem INTEGER NOT NULL DEFAULT 0,
            dur_ring TEXT NOT NULL DEFAULT '[]', -- JSON: recent durations (ns), preloaded into clients
            gap_ring TEXT NOT NULL DEFAULT '[]',
            dur_mean REAL, dur_p50 REAL, dur_p99 REAL,
            gap_mean REAL, gap_p50 REAL, gap_p99 REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (prog, kernel_id)
        );
        """
    )


# MIGRATIONS[i] takes a file from version i to i + 1.
MIGRATIONS: list[Migration] = [_v1]

JOB_COLUMNS = (
    "id", "name", "user", "uid", "gid", "argv", "cwd", "prio", "gpu", "state", "exit_code", "pid",
    "pid_start", "submitted_at", "started_at", "ended_at", "log_dir", "reason",
)


class Store:
    def __init__(self, path: Path, migrations: list[Migration] | None = None) -> None:
        self.path = path
        self.migrations = MIGRATIONS if migrations is None else migrations
        self.events: list[str] = []  # what happened at open (moved aside, migrated), for status
        # Told the seconds each write took: the metrics' latency histogram (a slow disk stalls the loop).
        self.write_observer: Callable[[float], None] | None = None
        self._writing = 0  # nesting of _timed: a transaction's statements are observed as one write
        self.db = self._open()

    @contextmanager
    def _timed(self, doing: str = "writing the store") -> Iterator[None]:
        """Time one write (a statement or a transaction) for ``write_observer``, failed ones included;
        a write the disk refused becomes a StoreWriteError that says so."""
        t0 = time.perf_counter()
        self._writing += 1
        try:
            yield
        except sqlite3.OperationalError as exc:
            if _write_error_code(exc) is None:
                raise
            raise StoreWriteError(self.path, doing, exc) from None
        finally:
            self._writing -= 1
            if self.write_observer is not None and not self._writing:
                self.write_observer(time.perf_counter() - t0)

    @contextmanager
    def transaction(self, doing: str) -> Iterator[None]:
        """Several writes that stand or fall together (a job's record and its log directory)."""
        with self._timed(doing):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    # --- opening, corruption, migration ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
            self._migrate(db)
            return db
        except OSError as exc:
            raise StoreWriteError(self.path, "cannot open the store", exc, _OPEN_OUTCOME) from None
        except sqlite3.DatabaseError as exc:
            if _write_error_code(exc) is not None and not _is_corrupt(exc):
                raise StoreWriteError(self.path, "cannot open the store", exc, _OPEN_OUTCOME) from None
            if not _is_corrupt(exc):
                raise
            aside = self._move_aside(str(exc))
            LOG.error("store %s is unreadable (%s); moved it to %s and started a fresh one",
                      self.path, exc, aside)
            db = self._connect()
            self._migrate(db)
            return db

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        db.row_factory = sqlite3.Row
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.DatabaseError(f"cannot use WAL mode (got {mode})")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise CorruptStore(f"integrity check failed: {check}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _move_aside(self, why: str) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(aside) + suffix))
        self.events.append(f"moved unreadable store aside to {aside}: {why}")
        return aside

    def version(self, db: sqlite3.Connection | None = None) -> int:
        db = db or self.db
        have = db.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if not have:
            return 0
        row = db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, db: sqlite3.Connection) -> None:
        current = self.version(db)
        target = len(self.migrations)
        if current > target:
            raise RuntimeError(
                f"store {self.path} has schema version {current}, newer than this fikitd ({target}); "
                "refusing to touch it"
            )
        if current == target:
            return
        if current > 0:
            backup = self.path.with_name(f"{self.path.name}.v{current}.bak")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copy2(self.path, backup)
            self.events.append(f"backed up schema v{current} to {backup}")
            LOG.info("store %s: backed up schema v%d to %s before migrating", self.path, current, backup)
        for v in range(current, target):
            db.execute("BEGIN IMMEDIATE")
            try:
                self.migrations[v](db)
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (?)", (v + 1,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if current > 0:
            self.events.append(f"migrated schema v{current} to v{target}")
            LOG.info("store %s: migrated schema v%d to v%d", self.path, current, target)

    def close(self) -> None:
        self.db.close()

    # --- jobs -----------------------------------------------------------------------------------

    def add_job(self, **fields: Any) -> int:
        fields = dict(fields)
        fields["argv"] = json.dumps(fields["argv"])
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        with self._timed("cannot record the job"):
            cur = self.db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(fields.values()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_job(self, job_id: int, **fields: Any) -> None:
        for key in fields:
            if key not in JOB_COLUMNS or key == "id":
                raise KeyError(key)
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._timed(f"cannot update job {job_id}"):
            self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def job(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(
        self, *, uid: int | None = None, states: Iterable[str] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if uid is not None:
            where.append("uid = ?")
            params.append(uid)
        if states is not None:
            states = list(states)
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(states)
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self.db.execute(sql, (*params, limit)).fetchall()
        return [_job(r) for r in reversed(rows)]

    # --- profiles -------------------------------------------------------------------------------

    def merge_kernels(self, prog: str, kernels: list[dict[str, Any]]) -> int:
        """Fold one client's new measurements into the program's profile.

        ``count`` in each entry is the number of launches not yet stored (the caller passes
        deltas), so a client flushed periodically and again at exit is never counted twice.
        Means are weighted by launches; quantiles take the newest run's values, which reflect
        the current input sizes better than an average of quantiles would.
        """
        with self._timed(f"cannot store the measurements of {prog}"):
            return self._merge_kernels(prog, kernels)

    def _merge_kernels(self, prog: str, kernels: list[dict[str, Any]]) -> int:
        now = time.time()
        n = 0
        self.db.execute("BEGIN")
        try:
            for k in kernels:
                kid = str(k.get("id", "")).lower()
                count = int(k.get("count", 0) or 0)
                if count <= 0 or not _KERNEL_ID.fullmatch(kid):
                    continue
                dur = k.get("dur_us") or {}
                gap = k.get("gap_us") or {}
                old = self.db.execute(
                    "SELECT count, dur_mean, gap_mean FROM profiles WHERE prog = ? AND kernel_id = ?",
                    (prog, kid),
                ).fetchone()
                total = count + (old["count"] if old else 0)

                def mix(new: Any, prev: Any, count: int = count, total: int = total, old: Any = old) -> Any:
                    if new is None:
                        return prev
                    if old is None or prev is None:
                        return float(new)
                    return (float(new) * count + float(prev) * (total - count)) / total

                row = (
                    prog, kid, str(k.get("name", ""))[:1024], total,
                    _ints(k.get("grid")), _ints(k.get("block")),
                    "graph" if k.get("kind") == "graph" else "kernel", int(k.get("smem") or 0),
                    _ints(k.get("dur_ring_ns"), 0), _ints(k.get("gap_ring_ns"), 0),
                    mix(dur.get("mean"), old["dur_mean"] if old else None), dur.get("p50"), dur.get("p99"),
                    mix(gap.get("mean"), old["gap_mean"] if old else None), gap.get("p50"), gap.get("p99"),
                    now,
                )
                self.db.execute(_UPSERT, row)
                n += 1
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                self.db.execute("ROLLBACK")
            raise
        return n

    def kernels(self, prog: str) -> list[dict[str, Any]]:
        """The program's profile in the shape shm.Domain.write_profile takes (and kernels() gives)."""
        rows = self.db.execute(
            "SELECT * FROM profiles WHERE prog = ? ORDER BY count DESC", (prog,)
        ).fetchall()
        return [
            {
                "id": r["kernel_id"], "name": r["name"], "count": r["count"], "kind": r["kind"],
                "grid": json.loads(r["grid"]), "block": json.loads(r["block"]), "smem": r["smem"],
                "dur_ring_ns": json.loads(r["dur_ring"]), "gap_ring_ns": json.loads(r["gap_ring"]),
                "dur_us": {"mean": r["dur_mean"], "p50": r["dur_p50"], "p99": r["dur_p99"]},
                "gap_us": {"mean": r["gap_mean"], "p50": r["gap_p50"], "p99": r["gap_p99"]},
                "updated_at": r["updated_at"],
            }
            for r in rows
        ]

    def programs(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT prog, COUNT(*) AS kernels, SUM(count) AS launches, MAX(updated_at) AS updated_at "
            "FROM profiles GROUP BY prog ORDER BY prog"
        ).fetchall()
        return [dict(r) for r in rows]

    def remove_profile(self, prog: str) -> int:
        with self._timed(f"cannot remove the profile of {prog}"):
            return self.db.execute("DELETE FROM profiles WHERE prog = ?", (prog,)).rowcount


_UPSERT = """
INSERT INTO profiles (prog, kernel_id, name, count, grid, block, kind, smem, dur_ring, gap_ring,
                      dur_mean, dur_p50, dur_p99, gap_mean, gap_p50, gap_p99, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (prog, kernel_id) DO UPDATE SET
    name = excluded.name, count = excluded.count, grid = excluded.grid, block = excluded.block,
    kind = excluded.kind, smem = excluded.smem,
    dur_ring = CASE WHEN excluded.dur_ring = '[]' THEN dur_ring ELSE excluded.dur_ring END,
    gap_ring = CASE WHEN excluded.gap_ring = '[]' THEN gap_ring ELSE excluded.gap_ring END,
    dur_mean = excluded.dur_mean, dur_p50 = coalesce(excluded.dur_p50, dur_p50),
    dur_p99 = coalesce(excluded.dur_p99, dur_p99), gap_mean = excluded.gap_mean,
    gap_p50 = coalesce(excluded.gap_p50, gap_p50), gap_p99 = coalesce(excluded.gap_p99, gap_p99),
    updated_at = excluded.updated_at
"""


def _ints(v: Any, pad: int | None = 3) -> str:
    """A JSON list of non-negative ints: grid/block (padded to 3) or a sample ring (as is, max 64)."""
    items = [int(x) for x in (v or []) if isinstance(x, (int, float)) and not isinstance(x, bool)][:64]
    if pad is not None and pad:
        items = (items + [0] * pad)[:pad]
    return json.dumps([max(0, x) for x in items])


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["argv"] = json.loads(job["argv"])
    return job
