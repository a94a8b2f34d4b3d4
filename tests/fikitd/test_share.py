"""The co-running share controller (fikitd/share.py): steps from HP kernel timings, probes, pins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from daemon_fixture import find_libfikit, start_daemon

from fikitd import shm
from fikitd.share import DomainShares, KernelTick, ShareController, Tick

K1, K2 = ("bert", "k1"), ("bert", "k2")


def tick(t: float, us: dict[tuple[str, str], float], *, corun: int = 10, held: int = 5, n: int = 10,
         lp: bool = True) -> Tick:
    hp = tuple(KernelTick(k, n, round(v * 1000 * n)) for k, v in us.items())
    return Tick(t, hp, lp, corun, held)


def settled(c: ShareController, base: dict[tuple[str, str], float]) -> None:
    """Start, then let the controller take its first probe (no baselines yet)."""
    assert c.pct == 50
    assert c.step(tick(0.0, base)) == 0, "no baseline: the first judged tick is a probe at share 0"
    assert c.step(tick(0.5, base, corun=0)) == 0, "LP held: one tick for what it queued to drain"
    assert c.step(tick(1.0, base, corun=0)) == 50, "the probe learns the baselines and restores the share"
    assert c.base_us[K1] == pytest.approx(base[K1])


def test_steps_down_while_hp_is_slowed_then_retries_from_zero_with_back_off() -> None:
    c = ShareController(tolerance=0.03, budget_us=1000)
    settled(c, {K1: 20.0, K2: 40.0})
    seen = [c.step(tick(2.0 + i, {K1: 22.0, K2: 44.0})) for i in range(5)]  # 10% slower
    assert seen == [40, 30, 20, 10, 0]
    assert "1.100x" in c.why
    assert c.step(tick(8.0, {K1: 20.0, K2: 40.0}, corun=0, held=3)) == 0, "back-off not over"
    assert c.step(tick(11.0, {K1: 20.0, K2: 40.0}, corun=0, held=3)) == 10, "5 s later: try again"
    c.step(tick(12.0, {K1: 30.0, K2: 60.0}))  # still hurts HP: back to 0, next wait is 10 s
    assert c.pct == 0
    assert c.step(tick(18.0, {K1: 20.0}, corun=0, held=3)) == 0
    assert c.step(tick(22.5, {K1: 20.0}, corun=0, held=3)) == 10


def test_steps_up_to_the_cap_while_hp_keeps_its_time_and_lp_waits() -> None:
    c = ShareController(max_pct=70)
    settled(c, {K1: 20.0})
    assert [c.step(tick(2.0 + i, {K1: 20.2})) for i in range(4)] == [60, 70, 70, 70]
    c2 = ShareController()
    settled(c2, {K1: 20.0})
    assert c2.step(tick(2.0, {K1: 20.2}, corun=0, held=0)) == 50, "LP not waiting: no reason to give more"


def test_one_kernel_over_the_delay_budget_lowers_the_share() -> None:
    c = ShareController(tolerance=0.5, budget_us=50)
    settled(c, {K1: 10.0, K2: 1000.0})
    assert c.step(tick(2.0, {K1: 10.0, K2: 1080.0})) == 40  # 8% slower overall but +80 us on K2
    assert "worst +80 us" in c.why


def test_new_hp_kernels_or_old_baselines_trigger_a_probe() -> None:
    c = ShareController(probe_s=30)
    settled(c, {K1: 20.0})
    new = ("bert", "k_new")
    assert c.step(tick(2.0, {K1: 20.0, new: 500.0})) == 0, "most of HP's time has no baseline"
    assert c.step(tick(2.5, {K1: 20.0, new: 500.0}, corun=0)) == 0
    assert c.step(tick(3.0, {K1: 20.0, new: 500.0}, corun=0)) == 50
    assert new in c.base_us
    assert c.step(tick(20.0, {K1: 20.0, new: 500.0})) in (50, 60)
    assert c.step(tick(34.0, {K1: 20.0, new: 500.0})) == 0, "30 s after the last probe"


def test_idle_hp_or_no_lp_keeps_the_share_and_hp_alone_is_a_baseline() -> None:
    c = ShareController()
    assert c.step(Tick(0.0, (), True, 5, 5)) == 50
    assert c.base_us == {}
    assert c.step(tick(1.0, {K1: 30.0}, lp=False)) == 50
    assert c.base_us == {}, "LP co-ran in the tick before: its queued kernels may still run"
    assert c.step(tick(2.0, {K1: 20.0}, lp=False)) == 50
    assert c.base_us == {K1: 20.0}, "HP with no LP client at all: the cleanest baseline there is"


def test_ticks_with_lp_released_into_gaps_teach_nothing() -> None:
    """Beside a Poisson HP the LP runs between requests; its kernels overlap HP's next ones."""
    c = ShareController()
    settled(c, {K1: 20.0})
    c.step(Tick(2.0, (KernelTick(K1, 10, 2_000_000),), True, 0, 5, None, 7))  # 200 us: LP in HP's gaps
    assert c.base_us[K1] == pytest.approx(20.0), "a tick with LP gap/idle releases is no baseline"


def test_a_probe_polluted_by_lp_fails_to_gap_filling_then_retries_after_back_off() -> None:
    c = ShareController()
    assert c.step(tick(0.0, {K1: 20.0})) == 0, "no baseline: probe"
    polluted = Tick(1.0, (KernelTick(K1, 10, 900_000),), True, 0, 5, None, 12)
    assert c.step(polluted) == 0, "LP ran in the probe (idle releases): no share from a dirty baseline"
    assert c.base_us == {}
    assert "no clean baseline" in c.why
    assert c.step(Tick(3.0, (KernelTick(K1, 10, 900_000),), True, 0, 5, None, 12)) == 0, "back-off"
    assert c.step(Tick(6.5, (KernelTick(K1, 10, 900_000),), True, 0, 5, None, 3)) == 10, "5 s on: retry"
    assert c.step(tick(7.5, {K1: 20.0})) == 0, "still no baseline: probe again"
    assert c.step(tick(8.0, {K1: 20.0}, corun=0)) == 0, "draining"
    assert c.step(tick(8.5, {K1: 20.0}, corun=0)) == 10, "a clean probe restores the share"
    assert c.base_us[K1] == pytest.approx(20.0)


def client(slot: int, pid: int, prio: int, **counters: int) -> dict[str, Any]:
    return {"slot": slot, "pid": pid, "prio": prio, "prog": "bert" if prio == 0 else "vgg",
            "released_corun": counters.get("corun", 0), "held_launches": counters.get("held", 0),
            "released_idle": counters.get("idle", 0)}


def kern(kid: str, n: int, mean_us: float) -> dict[str, Any]:
    return {"id": kid, "dur_us": {"n": n, "mean": mean_us}}


def test_domain_shares_turns_cumulative_slot_counters_into_ticks() -> None:
    ds = DomainShares(50, 70, 0.03, 50.0)
    tables: dict[int, list[dict[str, Any]]] = {0: [kern("k1", 100, 20.0)], 1: []}
    hp, lp = client(0, 11, 0), client(1, 12, 2, corun=5, held=5)
    assert ds.tick(0, 0.0, [hp, lp], tables.__getitem__) == 50, "first sight of a slot: counters only"
    # 10 new samples at 20 us (mean over 110 stays 20), LP co-ran meanwhile: no baseline -> probe
    tables[0] = [kern("k1", 110, 20.0)]
    lp = client(1, 12, 2, corun=15, held=9)
    assert ds.tick(0, 1.0, [hp, lp], tables.__getitem__) == 0
    # LP held (its counters still): the first clean tick only drains what LP had queued
    tables[0] = [kern("k1", 120, 20.0)]
    assert ds.tick(0, 2.0, [hp, lp], tables.__getitem__) == 0
    assert ds.controller(0).base_us == {}
    tables[0] = [kern("k1", 130, 20.0)]
    assert ds.tick(0, 4.0, [hp, client(1, 12, 2, corun=15, held=12)], tables.__getitem__) == 50
    assert ds.controller(0).base_us[("bert", "k1")] == pytest.approx(20.0)
    # samples now average 30 us (130 x 20 + 10 x 30 over 140): 1.5x the baseline -> down
    tables[0] = [kern("k1", 140, (130 * 20.0 + 10 * 30.0) / 140)]
    assert ds.tick(0, 5.0, [hp, client(1, 12, 2, corun=20, held=9)], tables.__getitem__) == 40
    # a new process in the HP slot: its counters are a fresh start, not a delta
    tables[0] = [kern("k1", 5, 90.0)]
    assert ds.tick(0, 6.0, [client(0, 99, 0), client(1, 12, 2, corun=25)], tables.__getitem__) == 40
    # LP idle releases in a tick without co-running: seen as LP running, so no baseline is learned
    ctl = ds.controller(0)
    before = dict(ctl.base_us)
    tables[0] = [kern("k1", 15, 200.0)]
    assert ds.tick(0, 7.0, [client(0, 99, 0), client(1, 12, 2, corun=25, idle=40)], tables.__getitem__) == 40
    assert ctl.base_us == before


@pytest.mark.skipif(find_libfikit() is None, reason="libfikit.so not built (cmake)")
def test_daemon_publishes_auto_share_and_set_mode_pins_it(fk_root: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIKIT_LIBRARY", str(find_libfikit()))
    d = start_daemon(fk_root, extra='[scheduler]\ncorun_sm_pct = "auto"\n')
    try:
        assert shm.Domain.open(fk_root / "run" / "gpu0").config()["corun_sm_pct"] == 50
        st = d.call("status")
        gpu = st["gpus"][0]
        assert gpu.get("corun_source", gpu.get("domain", {}).get("corun_source")) == "auto", gpu
        d.call("set_mode", gpu=0, corun_sm_pct=30)
        gpu = d.call("status")["gpus"][0]
        assert gpu.get("corun_source", gpu.get("domain", {}).get("corun_source")) == "pinned", gpu
        assert shm.Domain.open(fk_root / "run" / "gpu0").config()["corun_sm_pct"] == 30
    finally:
        assert d.stop() == 0


@pytest.mark.skipif(find_libfikit() is None, reason="libfikit.so not built (cmake)")
def test_the_default_is_hp_first_gap_filling(fk_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped default publishes share 0 (no co-running) and never steers it."""
    monkeypatch.setenv("FIKIT_LIBRARY", str(find_libfikit()))
    d = start_daemon(fk_root)
    try:
        assert shm.Domain.open(fk_root / "run" / "gpu0").config()["corun_sm_pct"] == 0
        gpu = d.call("status")["gpus"][0]
        assert gpu.get("corun_source", gpu.get("domain", {}).get("corun_source")) == "pinned", gpu
    finally:
        assert d.stop() == 0


def test_kernel_times_are_compared_in_clock_cycles() -> None:
    """A GPU that learned HP's baselines at 990 MHz and boosts to 1980 under load must not read as
    HP running at half its time (and LP getting more); at a slower clock, not as HP slowed."""
    c = ShareController(max_pct=70)
    assert c.step(Tick(0.0, (KernelTick(K1, 10, 400_000),), True, 10, 5, 990.0)) == 0  # probe
    assert c.step(Tick(0.5, (KernelTick(K1, 10, 400_000),), True, 0, 5, 990.0)) == 0  # LP's queue drains
    assert c.step(Tick(1.0, (KernelTick(K1, 10, 400_000),), True, 0, 5, 990.0)) == 50  # 40 us learned
    assert c.step(Tick(2.0, (KernelTick(K1, 10, 200_000),), True, 10, 5, 1980.0)) == 60, c.why  # same cycles
    assert "1.000x" in c.why
    assert c.step(Tick(3.0, (KernelTick(K1, 10, 440_000),), True, 10, 5, 1980.0)) == 50, c.why  # 2.2x cycles
    assert "worst +24 us" in c.why  # 44 us now against 20 us at this clock


def test_domain_shares_take_the_tick_clock_as_the_mean_of_its_ends() -> None:
    ds = DomainShares(50, 70, 0.03, 50.0)
    seen: list[float | None] = []
    ctl = ds.controller(0)
    real = ctl.step
    ctl.step = lambda t: seen.append(t.sm_mhz) or real(t)  # type: ignore[method-assign]
    hp = client(0, 11, 0)
    for mhz in (1000.0, 2000.0, None):
        ds.tick(0, 0.0, [hp], lambda slot: [], mhz)
    assert seen == [1000.0, 1500.0, None]
