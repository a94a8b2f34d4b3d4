"""bench/summarize.py over several result folders (issue 9's table from more than one run) and the
solo_mps baseline: ratios never mix rows of different runs, a later folder's mode wins and says so."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import summarize  # noqa: E402


def row(pair: str, mode: str, rep: int, p50: float, lp_its: float = 10.0, **kw: Any) -> dict[str, Any]:
    """A raw.jsonl row as run_pairs writes it (the fields summarize reads)."""
    hp, lp = pair.split(":")
    r: dict[str, Any] = {
        "pair": pair,
        "hp": hp,
        "hp_rate": 0.0,
        "lps": [lp],
        "lp_prios": ["low"],
        "mode": mode,
        "rep": rep,
        "ok": True,
        "error": None,
        "fill": None,
        "corun_sm_pct": None,
        "via": "daemon",
        "hp_stats": {"p50_ms": p50, "p99_ms": 2 * p50, "mean_ms": p50, "n": 100},
        "lp_stats": [{"its": lp_its, "model": lp}],
    }
    r.update(kw)
    return r


def folder(root: Path, name: str, commit: str, rows: list[dict[str, Any]]) -> Path:
    d = root / name
    d.mkdir()
    (d / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    env = {"commit": commit, "date": f"2026-11-25T{commit}", "driver": "580", "gpu": "H100", "via": "daemon"}
    (d / "env.jsonl").write_text(json.dumps(env) + "\n", encoding="utf-8")
    return d


@pytest.fixture(autouse=True)
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summarize, "plots", lambda summary, outdir: [])


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    # run A: solo 10 ms, mps_prio 15 ms, fikit 11 ms (1.1 x A's solo); a second pair p3
    a = [
        r
        for rep in (0, 1)
        for r in (
            row("hp1:lp1", "solo", rep, 10.0, 10.0),
            row("hp1:lp1", "mps", rep, 30.0, 8.0),
            row("hp1:lp1", "mps_prio", rep, 15.0, 4.0),
            row("hp1:lp1", "fikit", rep, 11.0, 6.0, corun_sm_pct=0),
            row("hp3:lp3", "solo", rep, 1.0),
        )
    ]
    a.append(row("hp1:lp1", "timeslice", 0, 1.0, ok=False, error="A broke"))
    # run B, a slower day: solo 20 ms, fikit 21 ms (1.05 x B's solo, 2.1 x A's); a new pair p2 first
    b = [
        r
        for rep in (0, 1)
        for r in (
            row("hp2:lp2", "solo", rep, 5.0),
            row("hp1:lp1", "solo", rep, 20.0, 20.0),
            row("hp1:lp1", "mps", rep, 40.0, 10.0),
            row("hp1:lp1", "fikit", rep, 21.0, 9.0, corun_sm_pct="auto"),
        )
    ]
    b.append(row("hp1:lp1", "fikit", 2, 1.0, ok=False, error="B broke"))
    return folder(tmp_path, "run-a", "aaa1111", a), folder(tmp_path, "run-b", "bbb2222", b)


def test_merge_later_folder_wins_ratios_stay_within_folder(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two
    out = tmp_path / "merged"
    assert summarize.main(["--dir", str(a), "--dir", str(b), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [p["pair"] for p in s["pairs"]] == ["hp1:lp1", "hp3:lp3", "hp2:lp2"]
    modes = s["pairs"][0]["modes"]
    assert list(modes) == ["solo", "mps", "mps_prio", "fikit"]
    assert {m: v["source"] for m, v in modes.items()} == {
        "solo": "run-b",
        "mps": "run-b",
        "mps_prio": "run-a",
        "fikit": "run-b",
    }
    # B's fikit against B's solo and MPS (against A's it would read 2.1 and 1.125)
    assert modes["fikit"]["hp_p50_ratio"] == 1.05
    assert modes["fikit"]["lp_vs_mps_ratio"] == 0.9
    assert modes["fikit"]["hp_speedup_vs_mps"] == pytest.approx(40 / 21, abs=1e-4)
    # A's mps_prio keeps A's solo and MPS (against B's: 0.75 and 0.4)
    assert modes["mps_prio"]["hp_p50_ratio"] == 1.5
    assert modes["mps_prio"]["lp_vs_mps_ratio"] == 0.5
    assert [(e["mode"], e["source"]) for e in s["pairs"][0]["errors"]] == [
        ("timeslice", "run-a"),
        ("fikit", "run-b"),
    ]
    assert s["commit"] == "bbb2222" and s["commits"] == ["aaa1111", "bbb2222"]
    assert [(x["dir"], x["commit"]) for x in s["sources"]] == [("run-a", "aaa1111"), ("run-b", "bbb2222")]
    # corun.json names fikit's variant from the rows of the run its figures came from (B: "auto")
    corun = json.loads((out / "corun.json").read_text(encoding="utf-8"))
    assert "auto" in corun["pairs"][0]["variants"] and "gapfill" not in corun["pairs"][0]["variants"]
    assert corun["pairs"][0]["variants"]["auto"]["source"] == "run-b"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "- `run-a`:" in report and "- `run-b`:" in report
    assert "| reps | source |" in report and "- fikit rep 2 (run-b): `B broke`" in report


def test_one_dir_has_no_sources(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two
    out = tmp_path / "one"
    assert summarize.main(["--dir", str(a), "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert "sources" not in s and "commits" not in s
    assert all("source" not in m for p in s["pairs"] for m in p["modes"].values())
    assert s["pairs"][0]["modes"]["fikit"]["hp_p50_ratio"] == 1.1
    assert "source" not in (out / "report.md").read_text(encoding="utf-8")


def test_several_dirs_need_out(two: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = two
    with pytest.raises(SystemExit) as e:
        summarize.main(["--dir", str(a), "--dir", str(b)])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err
    assert not (a / "summary.json").exists() and not (b / "summary.json").exists()


def test_vs_solo_mps_same_rep_else_pooled(tmp_path: Path) -> None:
    rows = [
        row("h:l", "solo", 0, 10.0),
        row("h:l", "solo", 1, 10.0),
        row("h:l", "solo_mps", 0, 12.0),  # rep 1 has none: the pooled median (12 ms) stands in
        row("h:l", "mps", 0, 30.0),
        row("h:l", "fikit", 0, 18.0),
        row("h:l", "fikit", 1, 24.0),
    ]
    d = folder(tmp_path, "run", "ccc", rows)
    t = summarize.pair_table(rows)["modes"]
    assert list(t) == ["solo", "solo_mps", "mps", "fikit"]
    assert t["fikit"]["hp_p50_vs_solo_mps"] == 1.75  # median of 18/12 and 24/12
    assert t["fikit"]["hp_p50_vs_solo_mps_spread"] == [1.5, 2.0]
    assert t["fikit"]["hp_p99_vs_solo_mps"] == 1.75
    assert t["solo_mps"]["hp_p50_vs_solo_mps"] == 1.0
    assert t["solo"]["hp_p50_vs_solo_mps"] == pytest.approx(10 / 12, abs=1e-4)
    without = summarize.pair_table([r for r in rows if r["mode"] != "solo_mps"])["modes"]
    assert not any(k.endswith("vs_solo_mps") for m in without.values() for k in m)
    assert summarize.main(["--dir", str(d)]) == 0
    report = (d / "report.md").read_text(encoding="utf-8")
    assert "| HP p99 / solo | HP p50 / solo MPS | HP p99 / solo MPS | HP mean / solo |" in report
    assert "| fikit | 2.10 [1.80–2.40] | 2.10 [1.80–2.40] | 1.75 [1.50–2.00] | 1.75 [1.50–2.00] |" in report


def test_notes_and_mechanisms_reach_corun_json_and_the_report(two: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two
    mech = tmp_path / "mech.json"
    mech.write_text(json.dumps({"commit": "abc", "date": "d", "variants": {
        "green33": {"hp_p50_ratio": 1.34, "hp_p99_ratio": 2.0, "lp_vs_mps_ratio": 0.87, "lp_sms_got": [40],
                    "hp_p50_us": 752.0}}}))
    out = tmp_path / "o"
    assert summarize.main(["--dir", str(a), "--out", str(out), "--mech", str(mech),
                           "--note", "LP kernels outlast HP gaps", "--note", "memory is shared"]) == 0
    corun = json.loads((out / "corun.json").read_text())
    assert corun["notes"] == ["LP kernels outlast HP gaps", "memory is shared"]
    g = corun["mechanisms"]["variants"]["green33"]
    assert g["lp_sms_got"] == [40] and "hp_p50_us" not in g  # the ratio keys only, as the pairs' variants
    report = (out / "report.md").read_text()
    assert "## Where the time went" in report and "- memory is shared" in report
    assert "| green33 | 1.34" in report
