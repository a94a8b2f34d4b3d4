"""bench/corun_mech.py's orchestration and arithmetic, on its dry-run stand-in (no GPU, nvcc or MPS).

The lead runs the probe once on an H100 with no second try, so everything but the GPU is proven
here: processes started and stopped, LP throughput counted inside the HP's window, ratios taken
against the same repetition's baselines, failures recorded in the row while the run goes on, the
budget and resuming; and the .cu compiles warning-free where nvcc exists.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import corun_mech  # noqa: E402

DRIVER = REPO / "bench" / "corun_mech.py"
FAST = ["--dry-run", "--window-s", "0.15", "--warmup-s", "0.02"]


def drive(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DRIVER), "--out", str(out), *FAST, *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_dry_run_rows_ratios_and_table(tmp_path: Path) -> None:
    variants = "hp_alone,lp_alone,mps,green33,affinity66"
    p = drive(tmp_path, "--reps", "2", "--variants", variants, "--dry-fail", "affinity66")
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(x) for x in (tmp_path / "mech.jsonl").read_text().splitlines()]
    assert sorted((r["rep"], r["variant"]) for r in rows) == sorted(
        (rep, v) for rep in range(2) for v in variants.split(",")
    )
    assert all(r["dry_run"] for r in rows)
    assert [r["variant"] for r in rows[:5]] != [r["variant"] for r in rows[5:]]  # order rotated
    s = json.loads((tmp_path / "mech.json").read_text())
    assert s["gpu"] == "dry-run" and s["sms"] == 132 and s["affinity_supported"] == [1]
    assert any("made up" in n for n in s["notes"])
    v = s["variants"]
    # the stand-in's HP p50 is 450 us x the variant's factor: mps 3.0, green33 1.05
    assert v["hp_alone"]["hp_p50_ratio"] == 1.0
    assert v["mps"]["hp_p50_ratio"] == pytest.approx(3.0) and v["mps"]["hp_p99_ratio"] == pytest.approx(3.0)
    assert v["green33"]["hp_p50_ratio"] == pytest.approx(1.05)
    assert v["mps"]["hp_p50_ratio_spread"] == [3.0, 3.0]
    # LP kernels/s from completions inside the HP's window: mps 1800, green33 0.45x, lp_alone 1.1x
    assert v["mps"]["lp_kernels_per_s"] == pytest.approx(1800, rel=0.03)
    assert v["mps"]["lp_vs_mps_ratio"] == 1.0
    assert v["green33"]["lp_vs_mps_ratio"] == pytest.approx(0.45, rel=0.05)
    assert v["mps"]["lp_tput_ratio"] == pytest.approx(1 / 1.1, rel=0.05)
    assert v["lp_alone"]["lp_tput_ratio"] == 1.0 and v["lp_alone"]["hp_p50_ratio"] is None
    assert v["green33"]["lp_sms_got"] == [33]
    # a context that cannot be made: its rows say why, and the other variants still ran
    assert v["affinity66"]["hp_p50_ratio"] is None and v["affinity66"]["reps"] == 2
    assert v["affinity66"]["errors"] == ["lp: CUDA_ERROR_NOT_SUPPORTED at cuCtxCreate(dry-run)"]
    out = p.stdout
    assert "variant" in out and "p50 x" in out and "lp/mps" in out
    cells = next(line for line in out.splitlines() if line.startswith("mps ")).split()
    assert cells[:4] == ["mps", "1350.0", "3.00", "3.00"] and float(cells[4]) == pytest.approx(1800, rel=0.03)

    # Run again: rows without errors are kept, the failed variant is retried.
    p2 = drive(tmp_path, "--reps", "2", "--variants", variants, "--dry-fail", "affinity66")
    assert p2.returncode == 0, p2.stdout + p2.stderr
    rows2 = [json.loads(x) for x in (tmp_path / "mech.jsonl").read_text().splitlines()]
    assert len(rows2) == len(rows) + 2 and {r["variant"] for r in rows2[len(rows) :]} == {"affinity66"}


def test_budget_stops_new_windows(tmp_path: Path) -> None:
    p = drive(tmp_path, "--reps", "3", "--variants", "hp_alone,mps", "--budget-s", "0.5")
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((tmp_path / "mech.json").read_text())
    assert any(n.startswith("budget:") for n in s["notes"])
    assert len((tmp_path / "mech.jsonl").read_text().splitlines()) < 6


def test_plan_lists_every_variant(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, str(DRIVER), "--out", str(tmp_path), "--plan-only"],
                       capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert all(v.name in p.stdout for v in corun_mech.VARIANTS) and "expected ~" in p.stdout
    assert not (tmp_path / "mech.jsonl").exists()


def row(rep: int, variant: str, hp: float | None, lp: float | None, **kw: Any) -> dict[str, Any]:
    return {"rep": rep, "variant": variant, "hp_p50_us": hp, "hp_p99_us": None if hp is None else 2 * hp,
            "lp_kernels_per_s": lp, "errors": [], **kw}  # fmt: skip


def test_summarize_pairs_each_rep_with_its_own_baselines() -> None:
    rows = [
        row(0, "hp_alone", 100, None), row(0, "lp_alone", None, 1000), row(0, "mps", 300, 800),
        row(0, "green33", 110, 400, lp_ready={"green_sms": 40, "affinity_supported": 1}),
        row(1, "hp_alone", 200, None), row(1, "lp_alone", None, 500), row(1, "mps", 400, 250),
        row(1, "green33", 240, 200, lp_ready={"green_sms": 40, "affinity_supported": 1}),
        row(2, "hp_alone", 100, None), row(2, "mps", 250, 900),
        row(2, "green33", None, None, errors=["lp: CUDA_ERROR_X at y"]),
        row(2, "green33", 130, 450),  # a resumed run's retry: the last row counts
    ]  # fmt: skip
    s = corun_mech.summarize(rows, ["hp_alone", "lp_alone", "mps", "green33"])
    g, m = s["variants"]["green33"], s["variants"]["mps"]
    assert g["hp_p50_ratio"] == pytest.approx(1.2) and g["hp_p50_ratio_spread"] == [1.1, 1.3]
    assert g["hp_p99_ratio"] == pytest.approx(1.2)
    assert g["lp_vs_mps_ratio"] == pytest.approx(0.5) and g["lp_vs_mps_ratio_spread"] == [0.5, 0.8]
    assert g["lp_tput_ratio"] == pytest.approx(0.4) and g["lp_tput_ratio_spread"] == [0.4, 0.4]  # rep 2: none
    assert g["lp_sms_got"] == [40] and g["errors"] == [] and g["reps"] == 3
    assert m["hp_p50_ratio"] == pytest.approx(2.5) and m["hp_p50_ratio_spread"] == [2.0, 3.0]
    assert m["lp_tput_ratio"] == pytest.approx(0.65)  # median of 0.8 and 0.5
    assert s["affinity_supported"] == [1]


def test_lp_rate_counts_only_the_window() -> None:
    done = [int(t * 1e6) for t in range(0, 100)]  # one a millisecond, from 0 to 99 ms
    assert corun_mech.lp_rate(done, int(10e6), int(20e6)) == pytest.approx(1000.0)
    assert corun_mech.lp_rate(done, 5, 5) is None


def test_cu_compiles_warning_free(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        pytest.skip("no nvcc (CI has none)")
    # Compile only: linking needs libcuda.so, which a machine without a driver may lack.
    p = subprocess.run([nvcc, "-O2", "-arch=sm_90", "-Xcompiler", "-Wall,-Wextra", "-c", "-o",
                        str(tmp_path / "mech.o"), str(corun_mech.SRC)],
                       capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
