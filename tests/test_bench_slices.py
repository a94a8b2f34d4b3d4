"""bench/slices.py (modes taking turns in short slices), the window statistics over several spans
(bench/ctl.py) and a worker that runs only inside its slices (bench/worker.py)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import pytest
from fakecuda_harness import REPO

sys.path.insert(0, str(REPO / "bench"))
import itertools

import ctl
import slices
import verify_multigpu
import worker

ORDER = verify_multigpu.SLICE_ORDER


def test_plan_alternates_and_tiles_the_block() -> None:
    block = slices.plan(ORDER, 3, 0.25)
    assert [s.mode for s in block] == [*ORDER, *ORDER[::-1], *ORDER]
    assert [s.mode for s in slices.plan(ORDER, 2, 0.25, rep=1)] == [*ORDER[::-1], *ORDER]
    # back to back, each slice_s long, from 0
    assert block[0].start == 0 and block[-1].end == pytest.approx(12 * 0.25)
    assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(block))
    assert all(s.end - s.start == pytest.approx(0.25) for s in block)


def test_fikit_never_runs_just_before_fikit_hp() -> None:
    """An LP step held in a fikit turn runs on after it; fikit_hp's LPs must be idle."""
    for rep in range(4):
        block = slices.plan(ORDER, 5, 0.3, rep)
        assert all(not (a.mode == "fikit" and b.mode == "fikit_hp") for a, b in itertools.pairwise(block))
        # every mode gets the same number of turns
        assert {m: sum(s.mode == m for s in block) for m in ORDER} == dict.fromkeys(ORDER, 5)


def test_measured_drops_each_slices_start_and_turns_merge_neighbours() -> None:
    block = slices.plan(["a", "b"], 2, 1.0)  # a b | b a
    assert slices.measured(block, "a", 0.25) == [(0.25, 1.0), (3.25, 4.0)]
    assert slices.measured(block, "b", 2.0) == []  # a discard longer than the slice leaves nothing
    assert slices.turns(block, ["b"]) == [(1.0, 3.0)]  # b's two slices are one turn
    assert slices.turns(block, ["a", "b"]) == [(0.0, 4.0)]
    assert slices.turns(block, ["c"]) == []


def test_cycles_cover_the_measured_time() -> None:
    assert slices.cycles_for(1.0, 0.35, 0.1) == 4  # 4 x 0.25 s measured
    assert slices.cycles_for(1.01, 0.35, 0.1) == 5
    assert slices.cycles_for(0.01, 0.35, 0.1) == 1
    with pytest.raises(ValueError, match="must exceed"):
        slices.cycles_for(1.0, 0.1, 0.1)
    with pytest.raises(ValueError, match="cycles >= 1"):
        slices.plan(ORDER, 0, 0.1)


def test_stats_over_several_spans() -> None:
    # a request every 10 ms, each 5 ms long, from t=0 to t=1
    recs = [[i * 0.01, i * 0.01, i * 0.01 + 0.005] for i in range(100)]
    h = ctl.hp_stats(recs, [(0.1, 0.2), (0.5, 0.6)])
    assert h["n"] == 20 and h["p50_ms"] == pytest.approx(5.0) and h["rps"] == pytest.approx(100.0)
    assert ctl.hp_latencies(recs, [(0.1, 0.2)]) == ([pytest.approx(5.0)] * 10, False)
    # LP iterations of 0.25 s: half of one in [0.375, 0.5), a whole one in [1.0, 1.25): 1.5 in 0.375 s
    lrecs = [[i * 0.25, (i + 1) * 0.25] for i in range(10)]
    lp = ctl.lp_stats(lrecs, [(0.375, 0.5), (1.0, 1.25)], batch=8)
    assert lp["its"] == pytest.approx(4.0) and lp["samples_s"] == pytest.approx(32.0)
    assert lp["iters_whole"] == 1


class _Steps:
    """A workload whose step takes 2 ms of the host's time."""

    role = "hp"

    def step(self) -> None:
        time.sleep(0.002)

    def sync(self) -> None:
        pass


def _worker(role: str = "hp", toggle_ms: float = 0) -> Any:
    w = worker.Worker.__new__(worker.Worker)  # the loops only: no model, no device
    w.args = argparse.Namespace(rate=0.0, seed=0, toggle_ms=toggle_ms, toggle_switch="measuring",
                                release_mem=False)  # fmt: skip
    w.wl = _Steps()
    w.wl.role = role
    w.device = "fake"
    w.iters_total = 0
    return w


@pytest.mark.parametrize("role", ["hp", "lp"])
def test_worker_runs_only_inside_its_slices(role: str) -> None:
    w = _worker(role)
    t = time.monotonic() + 0.05
    spans = [[t, t + 0.1], [t + 0.3, t + 0.4]]
    recs = w.run_window(t, 0.4, "x", spans)
    assert recs and w.iters_total == len(recs)
    starts = [r[1] if role == "hp" else r[0] for r in recs]
    assert all(any(a <= s < b for a, b in spans) for s in starts), (starts, spans)
    assert any(s >= t + 0.3 for s in starts) and any(s < t + 0.1 for s in starts)  # both slices ran
    # what the window used, over all its records (worker.usage_since), the sleep between slices too
    assert w.last_usage["n"] == len(recs) and w.last_usage["wall_s"] >= 0.35
    assert w.last_usage["proc_cpu_s"] >= w.last_usage["thread_cpu_s"] > 0


def test_worker_refuses_slices_with_toggles() -> None:
    with pytest.raises(ValueError, match="no slices"):
        _worker("hp", toggle_ms=50).run_window(time.monotonic(), 0.1, "x", [[0.0, 0.1]])
    # nor with a toggle asked for one window alone (verify_multigpu --floor-toggle-ms)
    with pytest.raises(ValueError, match="no slices"):
        _worker("hp").run_window(time.monotonic(), 0.1, "x", [[0.0, 0.1]], toggle=(50.0, "library"))
