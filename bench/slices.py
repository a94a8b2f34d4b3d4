"""Interleaved slices: the windows that are compared with each other, cut short and taking turns.

Why: on the H200 hosts an HP's speed drifts by several percent within seconds, whatever runs. Over
runs 4-8 of bench/results/2026-11-26-2xh200, the log ratio of one process's p50 in two adjacent
quarters of a window (0.25 s apart) had an interquartile range of 0.047. Between two 1-s windows a
few seconds apart (fikit over fikit_hp: the same process, LPs running or not) it was 0.104. The
side-by-side windows of a repetition differed by more than the library costs. Slices of a few
tenths of a second, taking turns for the same total time, put every mode under the same stretch
of host: a repetition's ratio then carries the modes' difference, not the drift between windows.
That was the bet, and on those hosts it lost (bench/results/2026-11-26-2xh200-run9): slow
stretches hit about 15% of 0.3-s slices whatever their mode, and the per-repetition spread of
fikit over solo doubled. verify_multigpu.py keeps windows by default.

A repetition's block is `cycles` rounds of one slice per mode. The order runs forwards on even
rounds and backwards on odd ones (and starts backwards on odd repetitions), so no mode always comes
first after another. Each slice's first `discard_s` is not measured: the process taking its turn
wakes, and what ran before it drains (an LP's step, a request that overran its slice).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slice:
    mode: str
    start: float  # seconds from the block's start
    end: float


def plan(order: Sequence[str], cycles: int, slice_s: float, rep: int = 0) -> list[Slice]:
    """The block of one repetition: `cycles` rounds of a slice per mode, back to back."""
    if cycles < 1 or slice_s <= 0 or not order:
        raise ValueError(f"a block needs cycles >= 1, slice_s > 0 and modes ({cycles}, {slice_s}, {order})")
    out: list[Slice] = []
    for c in range(cycles):
        modes = list(order) if (c + rep) % 2 == 0 else list(order)[::-1]
        for m in modes:
            t = len(out) * slice_s
            out.append(Slice(m, round(t, 6), round(t + slice_s, 6)))
    return out


def measured(block: Sequence[Slice], mode: str, discard_s: float) -> list[tuple[float, float]]:
    """A mode's measured spans (offsets from the block's start): its slices less their first discard_s."""
    return [(s.start + discard_s, s.end) for s in block if s.mode == mode and s.end > s.start + discard_s]


def turns(block: Sequence[Slice], modes: Sequence[str]) -> list[tuple[float, float]]:
    """When a process that belongs to `modes` runs (offsets): their slices, adjacent ones merged."""
    out: list[tuple[float, float]] = []
    for s in block:
        if s.mode not in modes:
            continue
        if out and abs(out[-1][1] - s.start) < 1e-9:
            out[-1] = (out[-1][0], s.end)
        else:
            out.append((s.start, s.end))
    return out


def cycles_for(measured_s: float, slice_s: float, discard_s: float) -> int:
    """Rounds needed for each mode to be measured for at least measured_s."""
    per = slice_s - discard_s
    if per <= 0:
        raise ValueError(f"--slice-s ({slice_s}) must exceed --slice-discard-s ({discard_s})")
    return max(1, math.ceil(measured_s / per - 1e-9))  # 1.0 / (0.35 - 0.1) is 4, not 4.0000001
