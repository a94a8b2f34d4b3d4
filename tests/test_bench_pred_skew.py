"""bench/pred_skew.py: how far a client's kernel-duration predictions run over its kernels' median
runs, from the FIKIT_STATS files the library writes at exit."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import pred_skew  # noqa: E402


def kernel(count: int, p50: float, pred: float, n: int = 32) -> dict[str, Any]:
    """A FIKIT_STATS kernel entry (the fields pred_skew reads)."""
    return {"count": count, "dur_us": {"n": n, "p50": p50, "pred": pred, "mean": p50, "p99": pred}}


def test_skew_counts_launches_of_overpredicted_kernels_and_leaves_unmeasured_ones_out() -> None:
    stats = {"kernels": [kernel(300, 6.0, 2400.0),  # predicted 400x its median run
                         kernel(700, 10.0, 12.0),
                         kernel(50, 0.0, 0.0, n=0)]}  # never measured
    s = pred_skew.skew(stats, factor=10.0)
    assert s["launches"] == 1000 and s["over"] == 300
    r = pred_skew.ratios(s)
    assert r["over_share"] == pytest.approx(0.3)
    assert r["pred_x_p50"] == pytest.approx((300 * 2400 + 700 * 12) / (300 * 6 + 700 * 10), abs=0.01)
    assert pred_skew.ratios(pred_skew.skew({"kernels": []}, 10.0)) == {"over_share": None, "pred_x_p50": None}


def test_main_sums_files_and_names_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json.gz"  # as committed results keep them (bench/pack_results.py)
    a.write_text(json.dumps({"kernels": [kernel(100, 5.0, 500.0)]}))
    b.write_bytes(gzip.compress(json.dumps({"kernels": [kernel(300, 5.0, 5.0)]}).encode()))
    assert pred_skew.main([str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all"] == {"launches": 400, "over_share": 0.25, "pred_x_p50": 25.75}
    assert out["files"][str(a)]["over_share"] == 1.0
    assert pred_skew.main([str(a), "--factor", "200"]) == 0
    assert "0.0 of them predicted over 200x" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kernels": [{"count": 1, "dur_us": {"n": 1}}]}))
    with pytest.raises(SystemExit, match=r"bad\.json: not a FIKIT_STATS file"):
        pred_skew.main([str(bad)])
