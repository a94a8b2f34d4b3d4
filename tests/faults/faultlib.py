"""Helpers of the fault suite: process figures, client environments, waiting."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from daemon_fixture import DaemonProc

REPO = Path(__file__).resolve().parents[2]
WORKLOAD = REPO / "tests" / "fakecuda" / "workload.py"
DURATIONS = "hp_conv=3000,hp_fc=1000,lp_small=1000,lp_mid=2500,lp_long=20000,*=500"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slot_files(d: DaemonProc) -> list[str]:
    return sorted(p.name for p in (d.root / "run" / "gpu0").glob("slot.*"))


def quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def client_env(d: DaemonProc, fake_dir: Path, lib: Path, prio: str | None, **extra: str) -> dict[str, str]:
    """A libfikit.so client of the daemon's domain on the fake driver (scrubbed of the caller's FIKIT_*)."""
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
