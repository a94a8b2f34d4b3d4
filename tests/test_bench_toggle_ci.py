"""bench/toggle_ci.py: overhead_probe.py's toggle windows, the median on/off ratio of each model and
variant with a 95% bootstrap interval over windows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import toggle_ci  # noqa: E402


def row(model: str, variant: str, on_p50: float, off_p50: float = 4.0, n: int = 100) -> dict[str, Any]:
    """A window as overhead_probe.py writes it (the fields toggle_ci reads)."""
    return {"model": model, "variant": variant, "rep": 0,
            "on": {"n": n, "p50_ms": on_p50, "p99_ms": 2 * on_p50},
            "off": {"n": n, "p50_ms": off_p50, "p99_ms": 2 * off_p50}}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_clear_cost_has_an_interval_above_one_and_an_outlier_moves_nothing(tmp_path: Path) -> None:
    # 40 windows about 1.5% dearer on, one far out: the median and its interval ignore it
    rows = [row("bert", "toggle", 4.0 * (1.015 + 0.001 * (i % 5 - 2))) for i in range(40)]
    rows.append(row("bert", "toggle", 4.0 * 1.9))
    s = toggle_ci.summarize(toggle_ci.windows(write(tmp_path / "overhead.jsonl", rows))[("bert", "toggle")])
    assert s["windows"] == 41
    assert s["p50"]["median"] == pytest.approx(1.015, abs=1e-4)
    lo, hi = s["p50"]["ci95"]
    assert 1.0 < lo <= 1.015 <= hi < 1.02
    assert s["p99"]["median"] == pytest.approx(1.015, abs=1e-4)  # p99 of each state here: twice its p50


def test_no_cost_straddles_one(tmp_path: Path) -> None:
    rows = [row("resnet50", "toggle_bypass", 4.0 * (1.0 + 0.01 * ((i * 7) % 11 - 5) / 5)) for i in range(60)]
    got = toggle_ci.windows(write(tmp_path / "o.jsonl", rows))
    s = toggle_ci.summarize(got[("resnet50", "toggle_bypass")])
    lo, hi = s["p50"]["ci95"]
    assert lo < 1.0 < hi


def test_windows_without_both_states_are_left_out_and_bad_lines_named(tmp_path: Path) -> None:
    rows = [row("bert", "toggle", 4.04), row("bert", "toggle", 4.04, n=0),
            {"model": "bert", "variant": "preload", "rep": 0, "stats": {"p50_ms": 4.0}}]
    got = toggle_ci.windows(write(tmp_path / "o.jsonl", rows))
    assert {k: len(v) for k, v in got.items()} == {("bert", "toggle"): 1}
    bad = write(tmp_path / "bad.jsonl", [row("bert", "toggle", 4.0)])
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2: not JSON"):
        toggle_ci.windows(bad)


def test_main_reads_price_sh_folders_by_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "2026-11-26-h100-abprobe"
    write(folder / "probe-base" / "overhead.jsonl", [row("bert", "toggle", 4.06) for _ in range(10)])
    write(folder / "probe-cand1" / "overhead.jsonl", [row("bert", "toggle", 4.02) for _ in range(10)])
    assert toggle_ci.main([str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["2026-11-26-h100-abprobe/probe-base"]["bert toggle"]["p50"]["median"] == pytest.approx(1.015)
    assert out["2026-11-26-h100-abprobe/probe-cand1"]["bert toggle"]["p50"]["median"] == pytest.approx(1.005)
    assert toggle_ci.main([str(folder)]) == 0
    assert "probe-cand1 bert toggle: 10 windows, on over off p50 x1.0050" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"no overhead\.jsonl"):
        toggle_ci.main([str(tmp_path / "empty")])
