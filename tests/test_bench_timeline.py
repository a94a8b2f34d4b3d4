"""bench/timeline_pair.py's analysis and rendering on synthetic traces (no GPU, no torch).

Two processes whose trace clocks differ are put on one axis by their markers; HP's request time is
split into kernel / waiting / host, each with and without LP kernels running, to the microsecond.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import timeline_pair  # noqa: E402

MONO0_US = 5_000_000.0  # CLOCK_MONOTONIC (us) of both markers' reading: the window starts 100 us later


def x(name: str, cat: str, ts: float, dur: float, corr: int | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur}
    if corr is not None:
        e["args"] = {"correlation": corr}
    return e


def write_side(
    d: Path, name: str, trace_zero: float, events: list[dict[str, Any]], meta: dict[str, Any]
) -> None:
    """events' ts are microseconds after the marker; the trace's own clock starts at trace_zero."""
    evs = [x("fikit_marker", "user_annotation", trace_zero, 1.0)]
    evs += [{**e, "ts": trace_zero + e["ts"]} for e in events]
    with gzip.open(d / f"{name}.trace.json.gz", "wt") as f:
        json.dump({"traceEvents": evs}, f)
    meta = {"pid": 100 + len(name), "marker": {"monotonic_ns": int(MONO0_US * 1000)}, **meta}
    (d / f"{name}.meta.json").write_text(json.dumps(meta))


def make_pair(d: Path) -> None:
    # window: monotonic [MONO0 + 100us, MONO0 + 1100us]; one HP request from +100 to +200 us
    w = [(MONO0_US + 100) / 1e6, (MONO0_US + 1100) / 1e6]
    req = [(MONO0_US + 100) / 1e6, (MONO0_US + 100) / 1e6, (MONO0_US + 200) / 1e6]
    hp = [
        x("cudaLaunchKernel", "cuda_runtime", 105, 3, 1), x("k1", "kernel", 110, 10, 1),
        x("cudaLaunchKernel", "cuda_runtime", 130, 3, 2), x("k2", "kernel", 140, 10, 2),
        x("cudaLaunchKernel", "cuda_runtime", 160, 3, 3), x("k3", "kernel", 180, 10, 3),
    ]  # fmt: skip
    write_side(d, "hp", 42.0, hp, {"model": "bert", "role": "hp", "window": w, "records": [req]})
    lp = [x("cudaLaunchKernelExC", "cuda_runtime", 150, 400, 9), x("lp_gemm", "kernel", 155, 30, 9)]
    write_side(d, "lp0", 9_000_000.0, lp, {"model": "vgg16_infer", "role": "lp", "window": w, "records": []})
    (d / "run.json").write_text(
        json.dumps({"pair": "bert:vgg16_infer", "mode": "fikit_corun50", "gpu": "synthetic"})
    )


def test_where_hp_time_went(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_pair(tmp_path)
    res = timeline_pair.analyze_dir(tmp_path)
    t = res["hp_time_ms"]
    us = {k: round(v * 1000, 3) for k, v in t.items()}
    assert res["hp_request_ms"] == pytest.approx(0.1)
    assert us == {
        "kernel": 30.0, "kernel_with_lp": 5.0,  # k3 [180,190] beside LP [155,185]
        "waiting": 35.0, "waiting_with_lp": 20.0,  # [105,110] + [130,140] + [160,180]
        "host": 35.0, "host_with_lp": 5.0,  # [100,105] [120,130] [150,160] [190,200]; LP from 155
    }  # fmt: skip
    assert sum(v for k, v in t.items() if not k.endswith("_with_lp")) == pytest.approx(res["hp_request_ms"])
    assert res["hp_kernels"]["n"] == 3 and res["hp_kernels"]["launch_unmatched"] == 0
    assert res["lp_kernels"]["n"] == 1 and res["lp_kernels"]["dur_us_p50"] == 30.0
    assert res["lp_launch_calls"]["over_100us"] == 1
    assert res["hp_gaps_us"]["n"] == 2 and res["hp_gaps_us"]["p50"] == 25.0  # 20 and 30 us
    assert res["mode"] == "fikit_corun50" and "approximate" in res["clock_note"]
    png = tmp_path / "timeline.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "timeline.json").read_text())["hp_time_ms"] == t


def test_render_only_command(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_pair(tmp_path)
    assert timeline_pair.main(["--render-only", str(tmp_path)]) == 0
    assert (tmp_path / "timeline.png").exists()


def test_interval_algebra() -> None:
    a = timeline_pair.union([(5, 9), (0, 2), (1, 3), (9, 10)])
    assert a == [(0, 3), (5, 10)]
    assert timeline_pair.intersect(a, [(2, 6)]) == [(2, 3), (5, 6)]
    assert timeline_pair.subtract(a, [(1, 2), (6, 7), (9, 20)]) == [(0, 1), (2, 3), (5, 6), (7, 9)]
