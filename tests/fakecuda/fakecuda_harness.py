"""Helpers shared by the interposition tests (tests/test_interpose_*.py, tests/test_cuda_abi.py).

Kept out of tests/conftest.py because other test directories have their own conftest modules, so
"import conftest" would not reliably find this one; tests/conftest.py puts this directory on sys.path.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from workload import fake_uuid  # noqa: F401 - the fake driver's uuids, for the tests

REPO = Path(__file__).resolve().parent.parent.parent
FAKE_SRC = REPO / "tests" / "fakecuda"
INCLUDE = REPO / "interpose" / "include"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"]
API_NAMES = ("cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch")


def compiler() -> str:
    """Honour $CC as a build would, falling back to whatever C compiler the machine has."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.fail("no C compiler (gcc or cc) on PATH: the interposition tests build C code")
    return cc


def check_build(procs: Sequence[tuple[str, subprocess.Popen[str]]]) -> None:
    """Builds run side by side (2-core CI); report every failure, not only the first."""
    errors = []
    for what, p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            errors.append(f"building {what} failed:\n{out}")
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@dataclass(frozen=True)
class FakeBuild:
    """Where the fake driver and the clients were built."""

    fake_dir: Path  # holds libcuda.so.1 and libcuda.so
    client: Path  # dlopen-only client
    client_direct: Path  # linked against libcuda.so.1
    pyclient: Path


@dataclass
class Run:
    """One client run: what it printed, what the library reported, what the driver saw."""

    args: list[str]
    rc: int
    stdout: str
    stderr: str
    reports: list[dict[str, Any]]  # the client's own JSON lines, one per process
    stats: dict[int, dict[str, Any]]  # FIKIT_STATS by pid
    truth: dict[int, dict[str, Any]]  # FAKECUDA_COUNTS by pid
    workdir: Path = field(default_factory=Path)

    @property
    def report(self) -> dict[str, Any]:
        """The top process's report (with --fork the child reports too, with child = -1)."""
        top = [r for r in self.reports if r.get("child") != -1]
        assert len(top) == 1, f"expected one top-level report, got {self.reports}\nstderr:\n{self.stderr}"
        return top[0]

    @property
    def pid(self) -> int:
        return int(self.report["pid"])

    def fikit_lines(self) -> list[str]:
        """Lines the library wrote to stderr (it prefixes them with 'fikit')."""
        return [ln for ln in self.stderr.splitlines() if ln.startswith("fikit")]

    def describe(self) -> str:
        return (f"client {' '.join(self.args)}\nrc={self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                f"\nstats: {sorted(self.stats)} truth: {sorted(self.truth)}")


def load_by_pid(pattern: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for path in glob.glob(pattern):
        pid = int(Path(path).name.split(".")[1])
        with open(path) as f:
            out[pid] = json.load(f)
    return out


RunClient = Callable[..., Run]


# ---------------------------------------------------------------------------------------------
# Comparisons shared by the test files.

def kernels_by_name(stats: Mapping[str, Any]) -> dict[str, int]:
    """Launch counts per kernel name as the library reports them (one name may have several ids)."""
    out: dict[str, int] = {}
    for k in stats.get("kernels", []):
        out[k["name"]] = out.get(k["name"], 0) + int(k["count"])
    return out


def assert_counts_match(run: Run, pid: int | None = None) -> None:
    """The library's counts for a process equal the fake driver's ground truth and the client's own."""
    pid = run.pid if pid is None else pid
    assert pid in run.truth, f"no ground truth for pid {pid}\n{run.describe()}"
    assert pid in run.stats, f"libfikit.so wrote no FIKIT_STATS for pid {pid}\n{run.describe()}"
    truth, stats = run.truth[pid], run.stats[pid]
    report = next(r for r in run.reports if r["pid"] == pid)
    for api in API_NAMES:
        assert truth[api] == report["launches"][api], f"fake driver miscounted {api}\n{run.describe()}"
        assert stats["launches"].get(api, 0) == truth[api], (
            f"{api}: libfikit.so counted {stats['launches'].get(api, 0)}, the driver saw {truth[api]}"
            f"\n{run.describe()}\nstats: {json.dumps(stats)[:2000]}")
    assert truth["kernels"] == report["kernels"], run.describe()
    assert kernels_by_name(stats) == truth["kernels"], (
        f"per-kernel counts differ\nlibfikit: {kernels_by_name(stats)}\ndriver: {truth['kernels']}\n"
        f"{run.describe()}")
    graphs = sum(int(g["count"]) for g in stats.get("graphs", []))
    assert graphs == truth["cuGraphLaunch"], f"graph counts: {stats.get('graphs')}\n{run.describe()}"
    # Per launch configuration: every (name, grid, block, smem) the driver saw, the library saw as often.
    for c in truth["configs"]:
        seen = sum(int(k["count"]) for k in stats["kernels"]
                   if k["name"] == c["name"] and list(k["grid"]) == c["grid"]
                   and list(k["block"]) == c["block"] and k.get("smem", c["smem"]) == c["smem"])
        assert seen == c["count"], f"config {c}: libfikit counted {seen}\n{run.describe()}"
