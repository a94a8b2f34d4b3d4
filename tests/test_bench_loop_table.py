"""bench/loop_table.py: medians over processes of launch_loop runs, by label; diff_ns where a run
measured a cost inside its process, median_us where not; anything else passed over and counted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import loop_table  # noqa: E402

RUNS = "\n".join([
    'real base   32 {"launches": 200000, "extra": 32, "diff_ns": 140.0, "median_us": 3.3}',
    'real base   32 {"launches": 200000, "extra": 32, "diff_ns": 120.0, "median_us": 3.9}',
    'real base   32 {"launches": 200000, "extra": 32, "diff_ns": 190.0, "median_us": 3.1}',
    'fake none e0 {"launches": 200000, "median_us": 0.09}',
    'fake none e0 {"launches": 200000, "median_us": 0.11}',
    'real base  128 {"error": "EXTRA 128 needs libfikit.so preloaded (no fikit_set_bypass)"}',
    "[ 92%] Building C object interpose/CMakeFiles/fikit.dir/src/launch.c.o",
    'real base   32 {"diff_ns": 1',
])  # fmt: skip


def test_medians_by_label() -> None:
    t = loop_table.table(RUNS)
    assert set(t["rows"]) == {"real base 32", "fake none e0"}
    want = {"field": "diff_ns", "median": 140.0, "processes": [120.0, 140.0, 190.0]}
    assert t["rows"]["real base 32"] == want
    assert t["rows"]["fake none e0"]["field"] == "median_us"
    assert t["rows"]["fake none e0"]["median"] == pytest.approx(0.10)
    assert t["skipped_lines"] == 3  # the error, the build line, the cut-off line


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "launch_loop.txt"
    f.write_text(RUNS)
    assert loop_table.main([str(f)]) == 0
    out = capsys.readouterr().out
    assert "real base 32       diff_ns median  140.0000" in out and "3 lines without" in out
    assert loop_table.main([str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["real base 32"]["median"] == 140.0
    assert loop_table.main([str(tmp_path / "none.txt")]) == 2
    assert "none.txt: no such file" in capsys.readouterr().err
