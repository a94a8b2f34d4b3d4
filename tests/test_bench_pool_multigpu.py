"""bench/pool_multigpu.py: verify_multigpu runs pooled, each fikit window over the same repetition's
solo window, and a verdict on each target only where the whole 95% interval is on one side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import pool_multigpu  # noqa: E402


def window(mode: str, rep: int, gen: int, p50: dict[str, float], ok: bool = True) -> dict[str, Any]:
    """A raw.jsonl row as verify_multigpu writes it (the fields the pool reads)."""
    return {"mode": mode, "rep": rep, "generation": gen, "ok": ok,
            "hp": {k: {"p50_ms": v, "p99_ms": 2 * v} for k, v in p50.items()}}


def write_run(d: Path, ratios: list[list[tuple[float, float]]]) -> Path:
    """A run whose generations hold these (hp0, hp1) fikit/solo ratios, one repetition each; solo
    windows at 4.0 ms, and other modes' windows that must not count."""
    d.mkdir(parents=True)
    rows, rep = [], 0
    for gen, reps in enumerate(ratios):
        for r0, r1 in reps:
            rows += [window("solo_hp", rep, gen, {"hp0": 4.0, "hp1": 4.0}),
                     window("fikit", rep, gen, {"hp0": 4.0 * r0, "hp1": 4.0 * r1}),
                     window("mps_prio", rep, gen, {"hp0": 40.0, "hp1": 40.0})]
            rep += 1
    rows.append(window("fikit", rep, 0, {"hp0": 400.0}))  # no solo window of its repetition
    rows.append(window("solo_hp", rep + 1, 0, {"hp0": 4.0}, ok=False))
    rows.append(window("fikit", rep + 1, 0, {"hp0": 400.0}))  # its solo window failed
    (d / "raw.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


def test_pooled_over_runs_with_a_verdict_per_target(tmp_path: Path) -> None:
    # hp0 close to 1.00 in every generation: both targets met; hp1 1.10 in every one: p50 missed
    a = write_run(tmp_path / "a", [[(1.00, 1.10), (1.01, 1.11)], [(0.99, 1.09), (1.00, 1.10)]])
    b = write_run(tmp_path / "b", [[(1.00, 1.10)], [(1.01, 1.12)], [(0.995, 1.10)]])
    out = pool_multigpu.pool([a, b])
    assert out["runs"] == ["a", "b"]
    g0, g1 = out["gpus"]["GPU 0"], out["gpus"]["GPU 1"]
    assert (g0["repetitions"], g0["generations"]) == (7, 5)
    assert g0["p50"]["median"] == pytest.approx(1.00)
    assert g0["p50"]["verdict"] == "met" and g0["p99"]["verdict"] == "met"
    assert g1["p50"]["median"] == pytest.approx(1.10)
    assert g1["p50"]["verdict"] == "missed"
    assert g1["p99"]["verdict"] == "missed"  # the p99 ratio is the same 1.10 here, over 1.05
    assert g0["generation_p50_medians"] == [1.005, 0.995, 1.0, 1.01, 0.995]
    assert g1["p50"]["per_run"] == [pytest.approx(1.10), pytest.approx(1.10)]


def test_each_runs_own_median_is_shown_beside_the_pooled_one(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Runs on two machines may differ by more than the interval over generations says (session
    13: one build 1.008-1.021 in-process from run to run), so each run's median is there to see."""
    a = write_run(tmp_path / "a", [[(1.00, 1.0)], [(1.02, 1.0)], [(1.01, 1.0)]])
    b = write_run(tmp_path / "b", [[(1.04, 1.0)], [(1.06, 1.0)]])
    g0 = pool_multigpu.pool([a, b])["gpus"]["GPU 0"]
    assert g0["p50"]["per_run"] == [pytest.approx(1.01), pytest.approx(1.05)]
    assert g0["p99"]["per_run"] == [pytest.approx(1.01), pytest.approx(1.05)]
    assert pool_multigpu.main([str(a), str(b)]) == 0
    assert "    per run: 1.010 1.050\n" in capsys.readouterr().out
    assert pool_multigpu.main([str(a)]) == 0  # one run: nothing to set beside it
    assert "per run" not in capsys.readouterr().out


def test_generations_far_apart_leave_the_target_undecided(tmp_path: Path) -> None:
    """Each generation tight, generations far apart: the interval resamples generations, so it is
    wide, although repetitions resampled one by one would have looked certain."""
    gens = [[(x, x)] * 4 for x in (0.90, 1.15, 0.95, 1.10, 1.00, 1.05)]
    out = pool_multigpu.pool([write_run(tmp_path / "r", gens)])
    p50 = out["gpus"]["GPU 0"]["p50"]
    lo, hi = p50["ci95"]
    assert lo < 1.02 < hi and p50["verdict"] == "undecided"
    assert 0.0 < p50["share_over_target"] < 1.0


def test_an_undecided_target_says_which_way_the_resamples_lean(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Two sets of generations whose intervals both hold 1.02, one centred over it and one under
    it: the share of resampled medians over the target tells them apart."""
    xs = (1.00, 1.05, 1.01, 1.04, 1.03, 1.035, 1.025, 1.045)
    over = [[(x, x)] * 2 for x in xs]
    under = [[(x - 0.02, x - 0.02)] * 2 for x in xs]
    hi_side = pool_multigpu.pool([write_run(tmp_path / "over", over)])["gpus"]["GPU 0"]["p50"]
    lo_side = pool_multigpu.pool([write_run(tmp_path / "under", under)])["gpus"]["GPU 0"]["p50"]
    assert hi_side["verdict"] == lo_side["verdict"] == "undecided"
    assert hi_side["share_over_target"] > 0.8 and lo_side["share_over_target"] < 0.2
    assert pool_multigpu.main([str(tmp_path / "over")]) == 0
    share = f"{hi_side['share_over_target']:.0%}"
    assert f"undecided (target <= 1.02; over it in {share} of resamples)" in capsys.readouterr().out


def test_cli_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "r", [[(1.0, 1.0)], [(1.0, 1.0)]])
    assert pool_multigpu.main([str(run)]) == 0
    text = capsys.readouterr().out
    assert "GPU 0 (hp0): 2 repetitions in 2 generations" in text
    assert "HP p50 x solo 1.0000, 95% interval 1.0000-1.0000: met (target <= 1.02)" in text
    assert "of resamples" not in text  # the lean is said only where the verdict is undecided
    assert pool_multigpu.main([str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpus"]["GPU 1"]["p99"]["verdict"] == "met"


def test_bad_input_names_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"nope/raw.jsonl: no such file"):
        pool_multigpu.pool([tmp_path / "nope"])
    run = write_run(tmp_path / "r", [[(1.0, 1.0)]])
    (run / "raw.jsonl").write_text((run / "raw.jsonl").read_text() + "{truncated\n")
    with pytest.raises(SystemExit, match=r"r/raw.jsonl:7: not JSON"):
        pool_multigpu.pool([run])


def test_the_floor_is_split_part_by_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fikit over fikit_hp (scheduling), mps_hp over solo (MPS), fikit_hp over mps_hp (the library
    and fikitd), each pooled over generations like the target."""
    d = tmp_path / "f"
    d.mkdir()
    rows = []
    for rep in range(4):  # solo 4.0, MPS alone 4.08, the library on top 4.2, the LPs on top 4.2
        gen = rep // 2
        for mode, ms in (("solo_hp", 4.0), ("mps_hp", 4.08), ("fikit_hp", 4.2), ("fikit", 4.2)):
            rows.append(window(mode, rep, gen, {"hp0": ms}))
    (d / "raw.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    floor = pool_multigpu.pool([d])["gpus"]["GPU 0"]["floor_p50"]
    assert floor["scheduling (fikit over fikit_hp)"]["median"] == pytest.approx(1.0)
    assert floor["MPS (mps_hp over solo_hp)"]["median"] == pytest.approx(1.02)
    assert floor["library and fikitd (fikit_hp over mps_hp)"]["median"] == pytest.approx(4.2 / 4.08, abs=1e-4)
    assert floor["MPS (mps_hp over solo_hp)"]["ci95"] == [1.02, 1.02]
    assert pool_multigpu.main([str(d)]) == 0
    text = capsys.readouterr().out
    assert "floor, p50: MPS (mps_hp over solo_hp) 1.0200, 95% interval 1.0200-1.0200" in text
    # a run without the floor's windows has no floor to split
    assert pool_multigpu.pool([write_run(tmp_path / "r", [[(1.0, 1.0)]])])["gpus"]["GPU 0"]["floor_p50"] == {}


def test_the_library_part_is_split_again_where_the_floor_was_toggled(tmp_path: Path) -> None:
    """Runs with --floor-toggle-ms have fikit_off rows (the fikit HP with its library off): the
    library and fikitd over MPS splits into the launches in-process and the rest."""
    d = tmp_path / "t"
    d.mkdir()
    rows = []
    # MPS alone 4.0, the same process with the library off 4.1, on 4.2, with its LPs 4.25
    modes = (("solo_hp", 4.0), ("mps_hp", 4.0), ("fikit_off", 4.1), ("fikit_hp", 4.2), ("fikit", 4.25))
    for rep in range(4):
        for mode, ms in modes:
            rows.append(window(mode, rep, rep, {"hp0": ms}))
    (d / "raw.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    floor = pool_multigpu.pool([d])["gpus"]["GPU 0"]["floor_p50"]
    assert floor["library and fikitd (fikit_hp over mps_hp)"]["median"] == pytest.approx(1.05)
    inproc = floor["  of which its launches, in-process (fikit_hp over fikit_off)"]
    assert inproc["median"] == pytest.approx(4.2 / 4.1, abs=1e-4)
    assert floor["  of which the rest (fikit_off over mps_hp)"]["median"] == pytest.approx(1.025)
    # all that fikit adds inside its own processes: the LPs' scheduling and the launches together
    own = floor["fikit in its own processes (fikit over fikit_off)"]
    assert own["median"] == pytest.approx(4.25 / 4.1, abs=1e-4)


def test_against_earlier_runs_reads_how_far_a_build_moved_the_hp(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--against divides these runs' pooled p50 by the earlier runs', resampling both sets, so a
    build that lowered the HP by 2% says so even where each set's own interval holds 1.02."""
    old = write_run(tmp_path / "old", [[(1.04, 1.00)], [(1.03, 1.00)], [(1.05, 1.00)]])
    new = write_run(tmp_path / "new", [[(1.01, 1.00)], [(1.00, 1.00)], [(1.02, 1.00)]])
    moved = pool_multigpu.against([new], [old])
    bert = moved["GPU 0"]["HP p50 x solo (fikit over solo_hp)"]
    assert bert["ratio"] == pytest.approx(1.01 / 1.04, abs=0.011)
    assert bert["ci95"][1] < 1.0 and bert["share_not_lower"] == 0.0
    assert bert["generations"] == [3, 3]
    same = moved["GPU 1"]["HP p50 x solo (fikit over solo_hp)"]
    assert same["ci95"] == [1.0, 1.0] and same["share_not_lower"] == 1.0
    # these runs have no fikit_off windows: that part is left out rather than read as 1.0
    assert "fikit in its own processes (fikit over fikit_off)" not in moved["GPU 0"]
    assert pool_multigpu.main([str(new), "--against", str(old)]) == 0
    text = capsys.readouterr().out
    assert "against 1 earlier runs" in text
    assert "GPU 0: HP p50 x solo (fikit over solo_hp) 0.97" in text
    assert pool_multigpu.main([str(new), "--against", str(old), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["against"]["runs"] == ["old"]
