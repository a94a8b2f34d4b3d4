"""The SM share LP may co-run on beside busy HP, chosen per GPU from what HP's kernels measure.

Why feedback and not a model of HP's grids: on the H100 (bench/results/2026-11-25-h100-s2) the
batch-1 HP models launch kernels of 132 or more blocks for over half of their GPU time, so a
block-count model says HP needs the whole GPU and LP may never co-run; yet with LP confined to
half the SMs, HP BERT kept its median latency within the run's noise while LP kept 0.68 of its
plain-MPS throughput (HP's blocks also take LP's SMs between LP blocks; what hurts is memory
bandwidth and queueing, which grids do not tell).  So the daemon measures instead: every tick it
compares the mean duration of the HP kernels sampled in that tick with the same kernels' durations
measured while no LP kernel co-ran, and moves the share:

- down one step when HP's kernels run more than ``tolerance`` longer (duration-weighted: HP's
  kernel sizes in time) or any one kernel more than the HP delay budget longer;
- up one step (to ``max_pct``) when HP is within half the tolerance and LP is waiting for it;
- to 0 for one tick (a probe: LP waits for gaps only) when the baselines are missing or older
  than ``probe_s``: when HP's kernel mix changes, its new kernels have none, so the share follows
  the mix.  From 0 it climbs again after a back-off that doubles while HP keeps objecting.

A baseline is learned only from a *clean* tick that follows another (so that what LP queued before
has drained): no LP client, or LP released nothing at all in it (held throughout); a probe lasts
two ticks for that reason.  Gap and idle releases count as LP running: beside a Poisson HP the LP runs
between requests and its long kernels overlap the next request's first kernels, and a controller
that learned from such ticks (2026-11-25, bench/results/2026-11-25-h100-base2/share_steps.txt) read
HP at 0.1-0.4x its "baseline" and raised the share to its cap while HP ran 1.5-1.9x slower.  A probe
that finds LP running anyway fails: the share stays at 0 (gap filling only) until the back-off.

Durations are compared in SM clock cycles where the GPU's clock is known (NVML): on the H100 the
first controller (2026-11-25, bench/results/2026-11-25-h100-auto/share_steps.txt) read HP kernels at
0.2x to 1.9x of their baselines, baselines learned at whatever clock the GPU had boosted to.

Why "auto" is not the default (config.py): on the H100 this controller read HP's kernels at
0.6-0.9x their baselines while LP co-ran, with event or CUPTI timing alike, while HP's requests ran
1.8-2.5x slower (bench/results/2026-11-25-h100-cupti).  HP loses its time before its kernels start,
to LP work ahead of them, and kernel durations do not show that; the signal to try next is HP's own
progress (launch-to-start time, or sync waits per request).  Its samples also grew scarcer on
2026-11-26: a settled kernel is timed 1 launch in 1024 (1 in 16 until that morning, then 1 in 256),
so the per-kernel check (MIN_SAMPLES a tick) fires only for kernels launched thousands of times a tick.

One implementation for the daemon and its tests; the library only reads the share it publishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STEP_PCT = 10
BASE_ALPHA = 0.5  # weight of a new probe's mean in a kernel's baseline
MIN_SAMPLES = 3  # a kernel's tick mean is believed from this many samples on
COVERAGE = 0.5  # share of HP's sampled kernel time that must have a baseline to judge a tick


@dataclass(frozen=True)
class KernelTick:
    """What one HP kernel id measured in one tick: sample count and their summed duration."""

    key: tuple[str, str]  # (program, kernel id): baselines outlive one process of the program
    n: int
    sum_ns: int


@dataclass(frozen=True)
class Tick:
    """One GPU's tick: HP's kernels measured in it, and what LP did."""

    now_s: float
    hp: tuple[KernelTick, ...]
    lp_present: bool
    lp_corun: int  # LP launches released to co-run in the tick
    lp_held: int  # LP launches that waited in the tick
    sm_mhz: float | None = None  # the GPU's SM clock over the tick, when known
    lp_other: int = 0  # LP launches released into gaps or idle time (or by the guard) in the tick

    @property
    def clean(self) -> bool:
        """HP ran with no LP work released beside it: its kernel times are a baseline."""
        return not self.lp_present or (self.lp_corun == 0 and self.lp_other == 0)

    @property
    def scale(self) -> float:
        """us -> the unit baselines are kept in: kilocycles at a known clock, else microseconds."""
        return self.sm_mhz / 1000.0 if self.sm_mhz else 1.0


@dataclass
class ShareController:
    """One GPU's co-running share: ``pct`` is what the domain should publish."""

    start_pct: int = 50
    max_pct: int = 70
    tolerance: float = 0.03
    budget_us: float = 50.0
    probe_s: float = 300.0
    pct: int = 0
    why: str = "start"
    base_us: dict[tuple[str, str], float] = field(default_factory=dict)  # in Tick.scale units
    _probing_from: int | None = None
    _prev_clean: bool = False
    _last_probe_s: float | None = None
    _backoff_s: float = 5.0
    _zero_since_s: float | None = None

    def __post_init__(self) -> None:
        self.pct = self.start_pct

    def step(self, t: Tick) -> int:
        """Take one tick's measurements; returns the share to publish (percent of the SMs)."""
        ran = [k for k in t.hp if k.n > 0]
        clean_run = t.clean and self._prev_clean  # this tick and the one before: LP's queue drained
        self._prev_clean = t.clean
        if self._probing_from is not None:
            self._last_probe_s = t.now_s
            if t.clean and not clean_run:
                self.why = "probe: LP held, its queued kernels draining"
                return 0  # one more tick: what LP queued before the probe may still run in this one
            if clean_run:
                self._learn(ran, t.scale)
                self.pct, self._probing_from = self._probing_from, None
                self.why = "probed"
                return self.pct
            self.pct, self._probing_from = 0, None
            self._zero_since_s = t.now_s
            self.why = "probe: LP ran beside HP in its gaps, no clean baseline: gap filling only"
            return self.pct  # 0 until the back-off; _climb retries
        if ran and clean_run:
            self._learn(ran, t.scale)  # HP ran with no LP beside it: that is its baseline
        if not ran or not t.lp_present:
            return self.pct  # nothing to judge: HP idle (LP runs free anyway) or no LP
        if self.pct == 0:
            return self._climb(t)
        if self._needs_probe(ran, t.now_s):
            self._probing_from, self.why = self.pct, "probe: HP baselines missing or old"
            return 0
        if t.lp_corun == 0:
            return self.pct
        slow, worst_us = self._slowdown(ran, t.scale)
        if slow > 1.0 + self.tolerance or worst_us > self.budget_us:
            self._down(t.now_s, f"HP kernels {slow:.3f}x their baseline, worst +{worst_us:.0f} us")
        elif slow <= 1.0 + self.tolerance / 2 and t.lp_held + t.lp_corun > 0 and self.pct < self.max_pct:
            self.pct = min(self.max_pct, self.pct + STEP_PCT)
            self.why = f"HP kernels {slow:.3f}x their baseline: LP gets more"
        return self.pct

    def _learn(self, ran: Iterable[KernelTick], scale: float) -> None:
        for k in ran:
            mean = k.sum_ns / k.n / 1000.0 * scale
            old = self.base_us.get(k.key)
            self.base_us[k.key] = mean if old is None else (1 - BASE_ALPHA) * old + BASE_ALPHA * mean

    def _needs_probe(self, ran: list[KernelTick], now_s: float) -> bool:
        total = sum(k.sum_ns for k in ran)
        known = sum(k.sum_ns for k in ran if k.key in self.base_us)
        stale = self._last_probe_s is None or now_s - self._last_probe_s >= self.probe_s
        return total > 0 and (known < COVERAGE * total or stale)

    def _slowdown(self, ran: list[KernelTick], scale: float) -> tuple[float, float]:
        """Duration-weighted ratio of this tick to the baselines, and the worst kernel's added time (us)."""
        num = den = 0.0
        worst = 0.0
        for k in ran:
            base = self.base_us.get(k.key)
            if base is None or base <= 0:
                continue
            mean = k.sum_ns / k.n / 1000.0 * scale
            num += k.n * mean
            den += k.n * base
            if k.n >= MIN_SAMPLES:
                worst = max(worst, (mean - base) / scale)
        return (num / den if den > 0 else 1.0), worst

    def _down(self, now_s: float, why: str) -> None:
        self.pct = max(0, self.pct - STEP_PCT)
        self.why = why
        if self.pct == 0:
            self._zero_since_s = now_s

    def _climb(self, t: Tick) -> int:
        """At 0 LP only fills gaps; try co-running again after the back-off, if LP is waiting."""
        since = self._zero_since_s if self._zero_since_s is not None else t.now_s
        self._zero_since_s = since
        if t.lp_held > 0 and t.now_s - since >= self._backoff_s:
            self._backoff_s = min(self._backoff_s * 2, 300.0)
            self._zero_since_s = None
            self.pct = STEP_PCT
            self.why = "LP waiting: trying co-running again"
        return self.pct


@dataclass
class _Seen:
    """A slot's cumulative counters at the last tick, to turn them into per-tick deltas."""

    pid: int
    kernels: dict[str, tuple[int, int]]
    corun: int
    held: int
    other: int = 0


class DomainShares:
    """The controllers of every GPU whose share is "auto", fed from the domains' slots."""

    def __init__(self, start_pct: int, max_pct: int, tolerance: float, budget_us: float) -> None:
        self.params = (start_pct, max_pct, tolerance, budget_us)
        self.by_gpu: dict[int, ShareController] = {}
        self._seen: dict[tuple[int, int], _Seen] = {}
        self._clock: dict[int, float | None] = {}

    def controller(self, gpu: int) -> ShareController:
        if gpu not in self.by_gpu:
            start, top, tol, budget = self.params
            self.by_gpu[gpu] = ShareController(start_pct=start, max_pct=top, tolerance=tol, budget_us=budget)
        return self.by_gpu[gpu]

    def tick(self, gpu: int, now_s: float, clients: list[dict[str, Any]],
             kernels_of: Any, sm_mhz: float | None = None) -> int:
        """One GPU: ``clients`` as Domain.snapshot() lists them, ``kernels_of(slot)`` its kernel table."""
        ctl = self.controller(gpu)
        live = [c for c in clients if c.get("pid")]
        top = min((int(c["prio"]) for c in live), default=None)
        hp: list[KernelTick] = []
        corun = held = other = 0
        lp_present = False
        for c in live:
            key = (gpu, int(c["slot"]))
            old = self._seen.get(key)
            fresh = old is None or old.pid != c["pid"]
            if int(c["prio"]) == top:
                table = {str(k["id"]): (int((k.get("dur_us") or {}).get("n") or 0), _sum_ns(k))
                         for k in kernels_of(int(c["slot"]))}
                if not fresh and old is not None:
                    for kid, (n, total) in table.items():
                        n0, t0 = old.kernels.get(kid, (0, 0))
                        if n > n0 and total >= t0:
                            hp.append(KernelTick((str(c.get("prog") or ""), kid), n - n0, total - t0))
                self._seen[key] = _Seen(int(c["pid"]), table, 0, 0)
            else:
                lp_present = True
                cr, hd = int(c.get("released_corun") or 0), int(c.get("held_launches") or 0)
                ot = sum(int(c.get(k) or 0) for k in ("released_gap", "released_idle", "released_guard"))
                if not fresh and old is not None:
                    corun += max(0, cr - old.corun)
                    held += max(0, hd - old.held)
                    other += max(0, ot - old.other)
                else:
                    other += 1  # a new LP: what it released before we saw it is unknown
                self._seen[key] = _Seen(int(c["pid"]), {}, cr, hd, ot)
        # the clock over the tick: the mean of its two ends' readings
        last = self._clock.get(gpu)
        self._clock[gpu] = sm_mhz
        mhz = (sm_mhz + last) / 2 if sm_mhz and last else sm_mhz
        if top is None:
            return ctl.pct
        return ctl.step(Tick(now_s, tuple(hp), lp_present, corun, held, mhz, other))


def _sum_ns(k: dict[str, Any]) -> int:
    d = k.get("dur_us") or {}
    n, mean = d.get("n") or 0, d.get("mean") or 0.0
    return round(float(mean) * int(n) * 1000)
