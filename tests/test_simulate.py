"""The trace simulator: fikit's own policy (in libfikit.so) on synthetic traces.

These drive `fikitctl simulate` both as a library call and as a command, on
traces whose right answer is known: short LP kernels fit HP's gaps, long ones
never do, and never-measured kernels wait for HP to idle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fikitctl.simulate import TraceError, parse_trace, simulate


@pytest.fixture(autouse=True)
def _lib(libfikit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIKIT_LIBRARY", str(libfikit))


def trace(hp: list[dict[str, Any]], lp: list[dict[str, Any]], hp_repeat: int = 100,
          lp_repeat: int = 100000) -> str:
    return json.dumps({"clients": [
        {"name": "hp", "prio": "high", "repeat": hp_repeat, "kernels": hp},
        {"name": "lp", "prio": "low", "repeat": lp_repeat, "kernels": lp},
    ]})


HP = [{"name": "conv", "dur_us": 120, "gap_us": 400}, {"name": "fc", "dur_us": 30, "gap_us": 300}]


def by_name(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in res["clients"]}


def test_short_lp_kernels_fill_gaps_without_slowing_hp() -> None:
    t = parse_trace(trace(HP, [{"name": "small", "dur_us": 300, "gap_us": 2}]))
    fik = by_name(simulate(t, "fikit", budget_us=20))
    off = by_name(simulate(t, "off"))
    # off: an HP launch waits behind a running LP kernel (up to 300 us) every time.
    assert off["hp"]["slowdown"] > 1.05
    # fikit: LP goes only where it fits, so HP's slowdown is at most the budget per kernel.
    assert fik["hp"]["slowdown"] <= 1.0 + (2 * 20) / (120 + 400 + 30 + 300) + 0.01
    assert fik["hp"]["slowdown"] < off["hp"]["slowdown"]
    assert fik["lp"]["released"]["gap"] > 100
    assert fik["lp"]["kernels_done"] > 0.5 * off["lp"]["kernels_done"]


def test_fill_reports_used_idle_time() -> None:
    t = parse_trace(trace(HP, [{"name": "small", "dur_us": 300, "gap_us": 2}]))
    res = simulate(t, "fikit", budget_us=20)
    assert res["fill"] is not None and 0.3 < res["fill"] <= 1.0
    strict = simulate(t, "strict")
    assert strict["fill"] is not None and strict["fill"] < 0.05


def test_long_lp_kernels_never_fit_and_wait() -> None:
    t = parse_trace(trace(HP, [{"name": "huge", "dur_us": 5000, "gap_us": 0}]))
    res = by_name(simulate(t, "fikit", budget_us=150))
    assert res["hp"]["slowdown"] <= 1.01
    assert res["lp"]["released"]["gap"] == 0
    off = by_name(simulate(t, "off"))
    assert off["hp"]["slowdown"] > 2


def test_unknown_kernels_are_conservative() -> None:
    """Cold (no stored profile), an LP kernel is assumed as long as unknown_us: with HP gaps of
    400 us and an unknown_us of 1000, it is never let into a gap, however short it really is."""
    t = parse_trace(trace(HP, [{"name": "tiny", "dur_us": 5, "gap_us": 0}]))
    res = by_name(simulate(t, "fikit", budget_us=20, unknown_us=1000, cold=True))
    assert res["lp"]["released"]["gap"] == 0
    assert res["lp"]["kernels_done"] <= 1
    # Profiled (as fikitd's store gives a known program), the same kernel fills gaps.
    res2 = by_name(simulate(t, "fikit", budget_us=20, unknown_us=1000))
    assert res2["lp"]["released"]["gap"] > 100


def test_hp_request_gaps_are_recognised_as_idle() -> None:
    """HP serving requests with 5 ms between them: LP's long kernels run in those idle periods, as
    predicted gaps once HP's gap after its last kernel is known, as idleness before."""
    hp = [{"name": "conv", "dur_us": 100, "gap_us": 20}, {"name": "fc", "dur_us": 30, "gap_us": 5000}]
    t = parse_trace(trace(hp, [{"name": "huge", "dur_us": 2000, "gap_us": 0}], hp_repeat=50))
    raw = simulate(t, "fikit", budget_us=150, idle_us=300)
    res = by_name(raw)
    assert res["lp"]["released"]["gap"] + res["lp"]["released"]["idle"] > 50
    assert raw["fill"] is not None and raw["fill"] > 0.5
    # A 2 ms LP kernel started in a 5 ms gap ends before HP's next request.
    assert res["hp"]["slowdown"] <= 1.05


def test_starvation_guard_gives_lp_its_share() -> None:
    t = parse_trace(trace(HP, [{"name": "huge", "dur_us": 800, "gap_us": 0}]))
    none = by_name(simulate(t, "fikit"))
    guarded = by_name(simulate(t, "fikit", min_lp_share=0.2))
    assert none["lp"]["released"]["guard"] == 0
    assert guarded["lp"]["released"]["guard"] > 10
    assert guarded["lp"]["kernels_done"] > none["lp"]["kernels_done"]


def test_three_levels() -> None:
    doc = {"clients": [
        {"name": "hp", "prio": "high", "repeat": 100, "kernels": HP},
        {"name": "mid", "prio": "normal", "repeat": 100,
         "kernels": [{"name": "m", "dur_us": 80, "gap_us": 600}]},
        {"name": "lp", "prio": 2, "repeat": 100000, "kernels": [{"name": "l", "dur_us": 3000, "gap_us": 0}]},
    ]}
    res = by_name(simulate(parse_trace(json.dumps(doc)), "fikit", budget_us=30))
    assert res["hp"]["slowdown"] <= 1.1
    assert res["lp"]["released"]["gap"] == 0


def test_corun_shares_sms() -> None:
    """Co-running: HP kernels that use 40% of the SMs leave room for LP confined to 50%."""
    hp = [{"name": "conv", "dur_us": 120, "gap_us": 20, "sm_pct": 40}]
    t = parse_trace(trace(hp, [{"name": "huge", "dur_us": 3000, "gap_us": 0}], hp_repeat=300))
    gap_only = by_name(simulate(t, "fikit", budget_us=50))
    corun = by_name(simulate(t, "fikit", budget_us=50, corun_sm_pct=50))
    assert corun["lp"]["released"]["corun"] > 0
    assert corun["lp"]["kernels_done"] > gap_only["lp"]["kernels_done"]
    assert corun["hp"]["slowdown"] <= 1.05


@pytest.mark.parametrize(("doc", "needle"), [
    ("not json", "not JSON"),
    ('{"clients": []}', "at least one client"),
    ('{"clients": [{"prio": "urgent", "kernels": [{"dur_us": 1}]}]}', "prio"),
    ('{"clients": [{"kernels": [{"dur_us": -1}]}]}', "kernels[0].dur_us"),
    ('{"clients": [{"kernels": [{"dur_us": 1, "typo": 2}]}]}', "unknown key 'typo'"),
    ('{"clients": [{"kernels": [{"dur_us": 1, "sm_pct": 101}]}]}', "sm_pct"),
])
def test_bad_traces_are_named(doc: str, needle: str) -> None:
    with pytest.raises(TraceError, match=None) as e:
        parse_trace(doc, "t.json")
    assert needle in str(e.value) and "t.json" in str(e.value)


def test_command_line(tmp_path: Path, libfikit: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(trace(HP, [{"name": "small", "dur_us": 300, "gap_us": 2}], hp_repeat=50))
    env = dict(os.environ, FIKIT_LIBRARY=str(libfikit))
    outs = {}
    for mode in ("off", "strict", "fikit"):
        p = subprocess.run([sys.executable, "-m", "fikitctl", "simulate", str(f), "--mode", mode, "--json"],
                           capture_output=True, text=True, env=env, check=False)
        assert p.returncode == 0, p.stderr
        outs[mode] = json.loads(p.stdout)
        assert set(outs[mode]) >= {"mode", "clients", "fill"}
        for c in outs[mode]["clients"]:
            assert set(c) >= {"name", "prio", "jct_us", "solo_jct_us", "slowdown", "kernels_done"}
    assert by_name(outs["off"])["hp"]["slowdown"] > by_name(outs["fikit"])["hp"]["slowdown"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"clients": 3}')
    p = subprocess.run([sys.executable, "-m", "fikitctl", "simulate", str(bad)], capture_output=True,
                       text=True, env=env, check=False)
    assert p.returncode == 2 and "bad.json" in p.stderr
