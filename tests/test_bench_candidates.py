"""bench/candidates/*.patch: cuts waiting for a GPU to price them (bench/candidates/price.sh).
A candidate that no longer applies to the library as it is would be priced against nothing: it
must be brought up to date or removed. With no candidate waiting, the first test has nothing to
check (pytest reports it skipped); price.sh itself must still parse."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PATCHES = sorted((REPO / "bench" / "candidates").glob("*.patch"))


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_candidate_applies_to_the_library_as_it_is(patch: Path) -> None:
    p = subprocess.run(["git", "apply", "--check", str(patch)], cwd=REPO, capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0, f"{patch.name} no longer applies: {p.stderr}"
    head = patch.read_text().split("diff --git", 1)[0]
    assert "price.sh" in head, f"{patch.name}: say above the diff what it cuts and how to price it"


def test_price_script_parses() -> None:
    """price.sh runs only on a GPU machine: a syntax error there would cost a call of device time."""
    p = subprocess.run(["bash", "-n", str(REPO / "bench" / "candidates" / "price.sh")], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
