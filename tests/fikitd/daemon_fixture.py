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
WORKLOAD = REPO / "tests" / "fakecuda" / "workload.py"
DURATIONS = "hp_conv=3000,hp_fc=1000,lp_small=1000,lp_mid=2500,lp_long=20000,*=500"
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


def client_env(d: DaemonProc, fake_dir: Path, lib: Path, prio: str | None, **extra: str) -> dict[str, str]:
    """A libfikit.so client of the daemon's domains on the fake driver (scrubbed of the caller's FIKIT_*).

    FIKIT_DOMAIN names gpu0; the library finds the other GPUs' domains next to it (by-uuid/).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FIKIT_", "FAKECUDA_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")
    }
    env.update(LD_LIBRARY_PATH=str(fake_dir), FAKECUDA_DURATIONS=DURATIONS, PYTHONPATH=str(REPO))
    if prio is not None:
        env.update(
            LD_PRELOAD=str(lib),
            FIKIT_DOMAIN=str(d.root / "run" / "gpu0"),
            FIKIT_SOCKET=str(d.socket),
            FIKIT_PRIO=prio,
        )
    env.update(extra)
    return env


def wait_file(path: Path, timeout: float = 20.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {path} appeared")
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


class Procs:
    """tests/fakecuda/workload.py clients of a daemon on the fake driver, sharing one device timeline.

    ``env`` is added to every client's environment (say FAKECUDA_DEVICES), ``start``'s to one client's.
    """

    def __init__(self, d: DaemonProc, fake_dir: Path, lib: Path, **env: str) -> None:
        self.d, self.fake_dir, self.lib, self.env = d, fake_dir, lib, env
        self.n = 0
        self.all: list[subprocess.Popen[str]] = []
        self.stats: dict[int, Path] = {}  # pid -> its FIKIT_STATS file (written at exit)

    def start(self, kernels: str, prio: str, *args: str,
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], Path]:
        self.n += 1
        progress = self.d.root / f"progress.{self.n}"
        ready = self.d.root / f"ready.{self.n}"
        extra = {"FAKECUDA_TIMELINE": str(self.d.root / "timeline"),
                 "FIKIT_STATS": str(self.d.root / f"stats.{self.n}.%p.json"), **self.env, **(env or {})}
        p = subprocess.Popen(
            [sys.executable, str(WORKLOAD), "--kernels", kernels, "--progress", str(progress),
             "--ready", str(ready), *args],
            env=client_env(self.d, self.fake_dir, self.lib, prio, **extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.all.append(p)
        self.stats[p.pid] = self.d.root / f"stats.{self.n}.{p.pid}.json"
        wait_file(ready, proc=p)
        return p, progress

    def close(self) -> None:
        for p in self.all:
            if p.poll() is None:
                p.kill()
            p.communicate()


def times(progress: Path, device: int | None = None) -> list[int]:
    """Completion times (monotonic ns) of a workload's kernels, of one device or of all."""
    if not progress.exists():
        return []
    rows = [ln.split() for ln in progress.read_text().splitlines() if ln.strip()]
    return [int(r[0]) for r in rows if device is None or (len(r) > 2 and int(r[2]) == device)]

