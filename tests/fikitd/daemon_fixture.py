"""Run the real fikitd as a real process for tests: config in a tmp dir, a test-owned NOTIFY_SOCKET.

Reusable by other test folders (the CLI's): put this folder on sys.path and import
``fikitd_daemon`` (a pytest fixture giving a started ``DaemonProc``) or ``start_daemon``.

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fikitd"))
    from daemon_fixture import fikitd_daemon, start_daemon  # noqa: F401
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKEBIN = REPO / "tests" / "fakebin"
sys.path.insert(0, str(REPO))

from fikitd.notify import NotifyListener  # noqa: E402
from fikitd.protocol import Client  # noqa: E402


def find_libfikit() -> Path | None:
    """A built libfikit.so for the shared-memory layout: $FIKIT_TEST_LIBRARY, else the dev build."""
    for cand in (os.environ.get("FIKIT_TEST_LIBRARY"), os.environ.get("FIKIT_LIBRARY"),
                 REPO / "build" / "dev" / "interpose" / "libfikit.so"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def config_text(root: Path, mps: str = "none", extra: str = "") -> str:
    return f"""
[paths]
runtime_dir = "{root}/run"
state_dir = "{root}/state"
log_dir = "{root}/log"

[mps]
mode = "{mps}"

[metrics]
enabled = false
{extra}
"""


class DaemonProc:
    def __init__(self, root: Path, config: Path, env: dict[str, str]) -> None:
        self.root = root
        self.config = config
        self.env = env
        self.socket = root / "run" / "fikitd.sock"
        self.stderr_path = root / "fikitd.stderr"
        self.notify = NotifyListener(root / "notify.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> DaemonProc:
        env = dict(self.env)
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        self.notify.messages.clear()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fikitd.main", "--config", str(self.config)],
                cwd=REPO, env=env, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "READY=1" in self.notify.lines():
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"fikitd exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"fikitd not ready in {timeout} s:\n{self.log()}")

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.socket, timeout=timeout).connect()

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        with self.client() as c:
            return c.call(op, **args)

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; the exit code (fikitd promises 0 within 10 s)."""
        if self.proc is None:
            return self.exit_code or 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"fikitd did not stop within {timeout} s:\n{self.log()}") from None
        self.proc = None
        return self.exit_code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()


def start_daemon(root: Path, *, mps: str = "none", extra: str = "", env: dict[str, str] | None = None,
                 wait: bool = True, config: str | None = None) -> DaemonProc:
    """Write a config under ``root`` and start fikitd on it."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "fikit.toml"
    cfg.write_text(config if config is not None else config_text(root, mps, extra))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "FIKIT_"))}
    full["PATH"] = f"{FAKEBIN}:{full.get('PATH', '/usr/bin:/bin')}"
    full["PYTHONPATH"] = str(REPO)
    lib = find_libfikit()
    if lib is not None:
        full["FIKIT_LIBRARY"] = str(lib)
    full.update(env or {})
    return DaemonProc(root, cfg, full).start(wait=wait)


@pytest.fixture
def fk_root() -> Iterator[Path]:
    """A fresh directory for one daemon, reachable by other users (pytest's tmp_path is 0700)
    and short enough for AF_UNIX socket paths."""
    root = Path(tempfile.mkdtemp(prefix="fikitd-test-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fikitd_daemon(fk_root: Path) -> Iterator[DaemonProc]:
    """A started fikitd (no MPS, metrics off) under a tmp dir; stopped, and checked to exit 0, after."""
    d = start_daemon(fk_root)
    try:
        yield d
    finally:
        if d.proc is not None:
            rc = d.stop()
            assert rc == 0, d.log()
        d.close()
