"""Make ``fikitctl`` importable from a plain checkout, and run it as a real process.

The package directory is ``cli/`` but installs as ``fikitctl``; without an install, a symlink in a
temporary directory gives it that name, for this process and for every child the tests start.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _import_root() -> str | None:
    """A directory to put on sys.path so that ``import fikitctl`` finds this checkout's cli/."""
    spec = importlib.util.find_spec("fikitctl")
    if spec is not None and spec.origin and Path(spec.origin).resolve().parent == REPO / "cli":
        return None
    shim = Path(tempfile.mkdtemp(prefix="fikitctl-shim-"))
    os.chmod(shim, 0o755)
    (shim / "fikitctl").symlink_to(REPO / "cli")
    return str(shim)


SHIM = _import_root()
EXTRA_PATH = [p for p in (SHIM, str(REPO)) if p]
for _p in reversed(EXTRA_PATH):
    if _p not in sys.path:
        sys.path.insert(0, _p)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*EXTRA_PATH, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("FIKIT_SOCKET", None)
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 30, **kw: object
) -> subprocess.CompletedProcess[str]:
    """fikitctl as users run it: a separate process, so exit codes and stderr are the real ones."""
    return subprocess.run(
        [sys.executable, "-m", "fikitctl", *args],
        env=env if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def cli_env() -> dict[str, str]:
    return child_env()
