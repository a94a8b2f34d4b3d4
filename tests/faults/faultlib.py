"""Helpers of the fault suite: process figures, client environments, waiting."""

from __future__ import annotations

import os
from pathlib import Path

from daemon_fixture import DURATIONS, WORKLOAD, DaemonProc, client_env, wait_file  # noqa: F401 - shared here


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
