"""libfikit.so must never break the program it is preloaded into.

It runs inside other people's training jobs: whatever is wrong around it (no daemon, a damaged or
hostile domain file, nonsense settings, a driver call of its own failing) it must log at most a line
and pass every launch through, once each, with the program's results unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fakecuda_harness import API_NAMES, assert_counts_match

if TYPE_CHECKING:
    from fakecuda_harness import Run, RunClient

ARGS = ["--mode", "procaddr_self", "--api", "all", "-n", "200", "--kernels", "inc,conv,gemm", "--check"]
MAX_FIKIT_LINES = 3


def assert_unharmed(run: Run, stats_expected: bool = True) -> None:
    """Exit 0, correct results, every launch reached the driver once, little noise."""
    assert run.rc == 0, run.describe()
    assert run.report["check"] is True, run.describe()
    truth = run.truth[run.pid]
    for api in API_NAMES:
        assert truth[api] == run.report["launches"][api], f"{api} lost or duplicated\n{run.describe()}"
    assert truth["kernels"] == run.report["kernels"], run.describe()
    assert len(run.fikit_lines()) <= MAX_FIKIT_LINES, run.describe()
    if stats_expected:
        assert_counts_match(run)


# -------------------------------------------------------------------------------------------------
# Settings.

@pytest.mark.parametrize("env", [
    {"FIKIT_PRIO": "nonsense"}, {"FIKIT_PRIO": "99"}, {"FIKIT_PRIO": "-1"}, {"FIKIT_PRIO": ""},
    {"FIKIT_PRIO": "high"}, {"FIKIT_PRIO": "low"},
    {"FIKIT_SAMPLE": "0"}, {"FIKIT_SAMPLE": "-5"}, {"FIKIT_SAMPLE": "lots"}, {"FIKIT_SAMPLE": "1"},
    {"FIKIT_PROFILE": "yes"}, {"FIKIT_PASSTHROUGH": "maybe"}, {"FIKIT_LOG": "debug"},
    {"FIKIT_PROG": "x" * 5000}, {"FIKIT_PROG": ""},
], ids=lambda e: "-".join(f"{k}={v[:12]}" for k, v in e.items()))
def test_nonsense_settings(run_client: RunClient, env: dict[str, str]) -> None:
    run = run_client(ARGS, env=env)
    if env.get("FIKIT_LOG") == "debug":
        assert run.rc == 0 and run.report["check"] is True
        assert_counts_match(run)
    else:
        assert_unharmed(run)


def test_stats_path_unwritable(run_client: RunClient, tmp_path: Path) -> None:
    run = run_client(ARGS, env={"FIKIT_STATS": str(tmp_path / "no" / "such" / "dir" / "s.%p.json")})
    assert_unharmed(run, stats_expected=False)


# -------------------------------------------------------------------------------------------------
# Domains that are missing or damaged.

def _random_domain(d: Path, size: int) -> None:
    d.mkdir()
    (d / "domain").write_bytes(os.urandom(size))


def _magic_wrong_sizes(d: Path) -> None:
    d.mkdir()
    head = (0x4E4D44544B4946).to_bytes(8, "little") + (1).to_bytes(4, "little")
    head += (0xFFFFFFFF).to_bytes(4, "little") * 3  # domain_size, slot_size, n_slots
    (d / "domain").write_bytes(head + os.urandom(1 << 20))


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _fifo(d: Path) -> None:
    d.mkdir()
    os.mkfifo(d / "domain")


def _no_perm(d: Path) -> None:
    _random_domain(d, 4096)
    d.chmod(0)


DAMAGED: dict[str, Callable[[Path], None]] = {
    "missing": lambda d: None,
    "empty-dir": lambda d: d.mkdir(),
    "random-bytes": lambda d: _random_domain(d, 1 << 20),
    "too-short": lambda d: _random_domain(d, 10),
    "zero-length": lambda d: _random_domain(d, 0),
    "magic-wrong-sizes": _magic_wrong_sizes,
    "domain-is-a-dir": lambda d: (d / "domain").mkdir(parents=True),
    "domain-is-a-fifo": _fifo,
    "path-is-a-file": lambda d: _write(d, b"not a directory"),
    "no-permission": _no_perm,
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_domain(run_client: RunClient, tmp_path: Path, kind: str) -> None:
    d = tmp_path / "gpu0"
    DAMAGED[kind](d)
    try:
        run = run_client(ARGS, env={"FIKIT_DOMAIN": str(d), "FIKIT_SOCKET": str(tmp_path / "nosock")},
                         timeout=20)
    finally:
        if d.is_dir():
            d.chmod(0o755)
    assert_unharmed(run)


# -------------------------------------------------------------------------------------------------
# Real domains (made with fikitd.shm, as the daemon makes them) without a working daemon.

@pytest.fixture
def make_domain(libfikit: Path, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> Callable[..., Path]:
    """A domain directory as fikitd writes it; the layout comes from the libfikit.so under test."""
    monkeypatch.setenv("FIKIT_LIBRARY", str(libfikit))
    from fikitd import shm

    def make(self_grant: bool, **config: int | str) -> Path:
        path = tmp_path / f"domain-{len(list(tmp_path.iterdir()))}"
        shm.Domain.create(path, 0, self_grant=self_grant, **config).close()  # type: ignore[arg-type]
        return path

    return make


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must fit in 108 bytes; pytest's tmp_path may not."""
    d = Path(tempfile.mkdtemp(prefix="fkso"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


class FakeDaemon:
    """A socket that behaves as a broken fikitd would: silent, rude, or plainly wrong."""

    def __init__(self, path: Path, behaviour: str) -> None:
        self.path = path
        self.behaviour = behaviour
        self.lines: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)
            if self.behaviour == "close":
                conn.close()
                continue
            conn.settimeout(1.0)
            data = b""
            try:
                while b"\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            self.lines.append(data.decode(errors="replace"))
            if self.behaviour == "garbage":
                conn.sendall(os.urandom(3000) + b"\n")
            elif self.behaviour == "refuse":
                conn.sendall(b'{"v": 1, "ok": false, "error": {"code": "not_permitted", "message": "no"}}\n')
            elif self.behaviour == "ok":
                conn.sendall(b'{"v": 1, "ok": true, "result": {"prio": 1, "profile": "", "mode": "fikit"}}\n')
            # "silent": never answers

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("behaviour", ["absent", "close", "silent", "garbage", "refuse"])
def test_daemon_domain_without_working_daemon(run_client: RunClient, make_domain: Callable[..., Path],
                                              short_dir: Path, behaviour: str) -> None:
    dom = make_domain(self_grant=False)
    sock = short_dir / "fikitd.sock"
    daemon = None if behaviour == "absent" else FakeDaemon(sock, behaviour)
    try:
        t0 = time.monotonic()
        run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom), "FIKIT_SOCKET": str(sock)}, timeout=20)
        elapsed = time.monotonic() - t0
    finally:
        if daemon:
            daemon.close()
    assert_unharmed(run)
    # Registration waits 1 s at most; the program must not wait longer on a silent daemon.
    assert elapsed < 2.0, f"the client took {elapsed:.2f} s with a {behaviour} daemon"


def test_log_lines_are_printable(run_client: RunClient, make_domain: Callable[..., Path],
                                 short_dir: Path) -> None:
    """What a daemon (or anything listening on the socket) sends must not reach the user's terminal raw."""
    dom = make_domain(self_grant=False)
    sock = short_dir / "fikitd.sock"
    daemon = FakeDaemon(sock, "garbage")
    try:
        run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom), "FIKIT_SOCKET": str(sock)})
    finally:
        daemon.close()
    for line in run.fikit_lines():
        assert line.isprintable() and "\ufffd" not in line, f"unprintable bytes in a log line: {line!r}"


@pytest.mark.parametrize("prog", ['quo"te', "back\\slash", 'x", "prio": 0, "y": "', "new\nline"])
def test_register_message_is_valid_json(run_client: RunClient, make_domain: Callable[..., Path],
                                        short_dir: Path, prog: str) -> None:
    """Whatever the program is called, the daemon must receive one well-formed request line."""
    dom = make_domain(self_grant=False)
    sock = short_dir / "fikitd.sock"
    daemon = FakeDaemon(sock, "ok")
    try:
        run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom), "FIKIT_SOCKET": str(sock), "FIKIT_PROG": prog})
    finally:
        daemon.close()
    assert_unharmed(run)
    assert len(daemon.lines) == 1, daemon.lines
    line = daemon.lines[0]
    assert line.endswith("\n") and line.count("\n") == 1, repr(line)
    msg = json.loads(line)
    assert msg["op"] == "register" and msg["pid"] == run.pid
    assert msg["prio"] == 1, f"the program name changed the requested priority: {line!r}"


def test_self_grant_domain(run_client: RunClient, make_domain: Callable[..., Path]) -> None:
    dom = make_domain(self_grant=True)
    run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom), "FIKIT_SOCKET": str(dom / "nosock")})
    assert_unharmed(run)
    assert run.stats[run.pid].get("slot", -1) >= 0, "the client did not join a self-granting domain"
    assert not list(dom.glob("slot.*")), "the slot file outlived its client"


def test_self_grant_domain_full_of_junk_slots(run_client: RunClient,
                                              make_domain: Callable[..., Path]) -> None:
    """Every slot file taken (by junk, or by other users): measure only, never fail."""
    dom = make_domain(self_grant=True, n_slots=4)
    for i in range(64):
        (dom / f"slot.{i}").write_bytes(os.urandom(100))
    run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom)})
    assert_unharmed(run)


def test_self_grant_domain_with_junk_in_one_slot(run_client: RunClient,
                                                 make_domain: Callable[..., Path]) -> None:
    dom = make_domain(self_grant=True, n_slots=4)
    (dom / "slot.0").write_bytes(os.urandom(1 << 16))
    (dom / "profile.0").write_bytes(os.urandom(1 << 16))
    run = run_client(ARGS, env={"FIKIT_DOMAIN": str(dom), "FIKIT_PRIO": "low"})
    assert_unharmed(run)


# -------------------------------------------------------------------------------------------------
# The library's own driver calls failing.

@pytest.mark.parametrize("failing", [
    "cuEventCreate", "cuEventRecord", "cuEventQuery", "cuEventElapsedTime", "cuFuncGetName",
    "cuKernelGetName", "cuStreamIsCapturing", "cuCtxGetCurrent",
    "cuEventCreate,cuEventRecord,cuEventQuery,cuEventElapsedTime,cuEventSynchronize,cuFuncGetName,"
    "cuKernelGetName,cuStreamIsCapturing,cuStreamGetCtx,cuCtxGetCurrent,cuCtxGetDevice,cuDeviceGetUuid",
], ids=lambda s: "everything" if "," in s else s)
@pytest.mark.parametrize("profile", [False, True], ids=["sampled", "profile"])
def test_library_driver_calls_fail(run_client: RunClient, failing: str, profile: bool) -> None:
    env = {"FAKECUDA_FAIL": failing}
    if profile:
        env["FIKIT_PROFILE"] = "1"
    run = run_client([*ARGS, "--load", "library_kernel"], env=env)
    names_lost = "cuFuncGetName" in failing and "cuKernelGetName" in failing
    assert_unharmed(run, stats_expected=not names_lost)
    if names_lost:  # kernels cannot be named, but every launch is still counted once
        stats, truth = run.stats[run.pid], run.truth[run.pid]
        assert all(stats["launches"][api] == truth[api] for api in API_NAMES), stats["launches"]
        assert sum(k["count"] for k in stats["kernels"]) == sum(truth["kernels"].values())
