"""Fixtures for the fault, load and hostile-input suite (issue 7): real daemon, real library, fake driver.

Reuses the daemon fixtures of tests/fikitd (``fk_root``, ``fikitd_daemon``, ``start_daemon``) and the
session fixtures of tests/conftest.py (``fake_build``, ``libfikit``).  Figures the issue asks for
(latencies, RSS, counts) are recorded with the ``figures`` fixture: printed at the end of the run and
written to build/faults/figures.json, from which docs/reliability.md is updated by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(HERE), str(REPO / "tests" / "fikitd"), str(REPO / "tests" / "fakecuda"), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

from daemon_fixture import DaemonProc, fikitd_daemon, fk_root, start_daemon  # noqa: E402,F401

FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict for one test's measured figures; collected for the end-of-run summary."""
    return FIGURES.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    out = REPO / "build" / "faults"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass
    terminalreporter.section("fault suite figures")
    for name, figs in sorted(FIGURES.items()):
        if figs:
            terminalreporter.write_line(f"{name}: {json.dumps(figs, sort_keys=True)}")


@pytest.fixture(scope="session")
def enospc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/faults/enospc.c built: LD_PRELOAD it to make writes under ENOSPC_DIR fail with ENOSPC
    while the file ENOSPC_FLAG exists (a full disk, without mounts)."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.fail("no C compiler to build tests/faults/enospc.c")
    out = tmp_path_factory.mktemp("enospc") / "enospc.so"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", "-o", str(out),
                    str(HERE / "enospc.c"), "-ldl"], check=True)
    return out


@pytest.fixture
def daemon(fk_root: Path) -> Iterator[Callable[..., DaemonProc]]:  # noqa: F811
    """start_daemon(fk_root, **kw), killed (not checked) afterwards whatever the test did to it."""
    made: list[DaemonProc] = []

    def make(**kw: Any) -> DaemonProc:
        d = start_daemon(fk_root, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
