#!/usr/bin/env python3
"""Pool the HP ratios of several verify_multigpu.py runs, and say how sure the pooled figure is.

One run of about 500 s cannot tell 1.02 from 1.03: a single generation of HP processes moved the
ratio by up to 48% on the H200 hosts (bench/results/2026-11-26-2xh200/RUNS.md). So the runs of
one set-up are pooled: per repetition, fikit's HP p50 and p99 over the same repetition's solo_hp,
their medians over every run, and the median of each generation of HP processes (the processes
between two restarts). The interval is a bootstrap that resamples whole generations, not single
repetitions: repetitions of one generation share its processes' offset, and resampling them one
by one would claim a certainty the data does not have. Where the interval holds the target, the
share of resampled medians over it says which way the data leans (an interval of 1.013-1.032
around a target of 1.02 is not an even bet). The floor under fikit's HP is pooled the
same way, part by part (FLOOR, p50 only): what scheduling the LPs, MPS, and the library with
fikitd each cost the HP, and what fikit adds inside its own processes.

    python3 bench/pool_multigpu.py bench/results/2026-11-26-2xh200-run{4,5,6,7,8,10} [--json]

With --against, the earlier runs named are pooled too, and the pooled p50 of the runs given is
divided by theirs, resampling both: how far a new build moved the HP.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import benchlib

HPS = (("hp0", "GPU 0"), ("hp1", "GPU 1"))
RESAMPLES = 2000
TARGET_P50, TARGET_P99 = 1.02, 1.05  # the single-GPU targets (bench/summarize.py)


# What fikit adds inside its own HP processes, scheduling and launches together: the same
# processes in both terms, so free of the offsets that part one generation from another
OWN = ("fikit in its own processes (fikit over fikit_off)", "fikit", "fikit_off")

# The floor under fikit's HP, split as verify_multigpu splits it: (name, numerator, denominator)
FLOOR = (
    ("scheduling (fikit over fikit_hp)", "fikit", "fikit_hp"),
    ("MPS (mps_hp over solo_hp)", "mps_hp", "solo_hp"),
    ("library and fikitd (fikit_hp over mps_hp)", "fikit_hp", "mps_hp"),
    # runs with --floor-toggle-ms split that last part inside the fikit HP's own process
    ("  of which its launches, in-process (fikit_hp over fikit_off)", "fikit_hp", "fikit_off"),
    ("  of which the rest (fikit_off over mps_hp)", "fikit_off", "mps_hp"),
    OWN,
)


def jsonl_rows(path: Path, tool: str) -> list[dict[str, Any]]:
    """Every row of a finished result file, packed or not; a line that is not JSON stops the
    tool, named by file and line (benchlib.read_jsonl skips it instead: that is for a run still
    being written)."""
    rows = []
    for source, n, line in benchlib.jsonl_lines(path):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise SystemExit(f"{tool}: {source}:{n}: not JSON ({e})") from None
    return rows


def load(run: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """A run's ok windows with HP figures, by (repetition, mode)."""
    raw = run / "raw.jsonl"
    if not raw.is_file() and not benchlib.packed_copy(raw).is_file():
        raise SystemExit(f"pool_multigpu: {raw}: no such file (a verify_multigpu.py result folder?)")
    rows = jsonl_rows(raw, "pool_multigpu")
    return {(r["rep"], r["mode"]): r for r in rows if r.get("ok") and "hp" in r}


def generations(
    by: dict[tuple[int, str], dict[str, Any]], hp: str, num: str = "fikit", den: str = "solo_hp"
) -> list[list[tuple[float, float]]]:
    """A run's (p50, p99) ratios of mode num over den, per repetition, grouped by generation."""
    gens: dict[int, list[tuple[float, float]]] = {}
    for (rep, mode), a in sorted(by.items()):
        b = by.get((rep, den))
        if mode != num or not b or hp not in a["hp"] or hp not in b["hp"]:
            continue
        ratio = (a["hp"][hp]["p50_ms"] / b["hp"][hp]["p50_ms"], a["hp"][hp]["p99_ms"] / b["hp"][hp]["p99_ms"])
        gens.setdefault(int(a.get("generation", 0)), []).append(ratio)
    return [v for _, v in sorted(gens.items())]


def medians(gens: list[list[tuple[float, float]]], q: int, rnd: random.Random) -> list[float]:
    """The pooled median of ratio q (0: p50, 1: p99) over RESAMPLES bootstrap resamples of the
    generations, in the order drawn."""
    return [statistics.median(x[q] for g in rnd.choices(gens, k=len(gens)) for x in g)
            for _ in range(RESAMPLES)]


def resampled(gens: list[list[tuple[float, float]]], q: int, seed: int = 1) -> list[float]:
    """medians(), sorted."""
    return sorted(medians(gens, q, random.Random(seed)))


def interval(meds: list[float]) -> tuple[float, float]:
    """95% interval of sorted resampled medians."""
    return meds[int(0.025 * len(meds))], meds[int(0.975 * len(meds)) - 1]


def per_run(by_run: list[list[list[tuple[float, float]]]], q: int = 0) -> list[float | None]:
    """Each run's own median of ratio q, from each run's generations in the order given (None: no
    repetition with both): the pooled interval speaks of generations, and runs on different
    machines can differ by more than it suggests (runs 19-21 of one build spread 1.008-1.021
    in-process, session 13)."""
    out: list[float | None] = []
    for gens in by_run:
        xs = [x[q] for g in gens for x in g]
        out.append(round(statistics.median(xs), 4) if xs else None)
    return out


def pool(runs: list[Path]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": [r.name for r in runs], "gpus": {}}
    loaded = [load(run) for run in runs]
    for hp, label in HPS:
        by_run = [generations(by, hp) for by in loaded]
        gens = [g for run_gens in by_run for g in run_gens]
        reps = [x for g in gens for x in g]
        if not reps:
            out["gpus"][label] = {"hp": hp, "repetitions": 0}
            continue
        entry: dict[str, Any] = {"hp": hp, "repetitions": len(reps), "generations": len(gens)}
        for q, name, target in ((0, "p50", TARGET_P50), (1, "p99", TARGET_P99)):
            meds = resampled(gens, q)
            lo, hi = interval(meds)
            entry[name] = {
                "median": round(statistics.median(x[q] for x in reps), 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "target": target,
                "share_over_target": round(sum(m > target for m in meds) / len(meds), 3),
                # met: the whole interval under the target; missed: the whole interval over it
                "verdict": "met" if hi <= target else "missed" if lo > target else "undecided",
                "per_run": per_run(by_run, q),
            }
        entry["generation_p50_medians"] = [round(statistics.median(x[0] for x in g), 3) for g in gens]
        entry["floor_p50"] = {}
        for name, num, den in FLOOR:  # what fikit's HP pays, part by part (p50 only)
            floor_by_run = [generations(by, hp, num, den) for by in loaded]
            fg = [g for run_gens in floor_by_run for g in run_gens]
            if fg:
                lo, hi = interval(resampled(fg, 0))
                med = statistics.median(x[0] for g in fg for x in g)
                entry["floor_p50"][name] = {"median": round(med, 4), "ci95": [round(lo, 4), round(hi, 4)],
                                            "per_run": per_run(floor_by_run)}
        out["gpus"][label] = entry
    return out


# What a comparison against earlier runs reads: (name, numerator, denominator), p50 only
AGAINST = (("HP p50 x solo (fikit over solo_hp)", "fikit", "solo_hp"), OWN)


def against(runs: list[Path], baseline: list[Path], seed: int = 2) -> dict[str, Any]:
    """These runs' pooled p50 ratios over the baseline runs', with a 95% interval from resampling
    the generations of both sets: a new build is judged by how far it moved the pooled figure,
    which the two sets' intervals, each wide with the host's noise, cannot say by overlapping."""
    new, old = [load(r) for r in runs], [load(r) for r in baseline]
    out: dict[str, Any] = {}
    for hp, label in HPS:
        out[label] = {}
        for name, num, den in AGAINST:
            a = [g for by in new for g in generations(by, hp, num, den)]
            b = [g for by in old for g in generations(by, hp, num, den)]
            if not a or not b:
                continue
            ma, mb = medians(a, 0, random.Random(seed)), medians(b, 0, random.Random(seed + 1))
            moved = sorted(x / y for x, y in zip(ma, mb, strict=True))
            lo, hi = interval(moved)
            out[label][name] = {
                "ratio": round(statistics.median(moved), 4), "ci95": [round(lo, 4), round(hi, 4)],
                "generations": [len(a), len(b)],
                "share_not_lower": round(sum(m >= 1 for m in moved) / len(moved), 3),
            }
    return out


def runs_text(values: list[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:.3f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="verify_multigpu.py result folders")
    p.add_argument("--json", action="store_true", help="the pooled figures as JSON")
    p.add_argument("--against", action="append", type=Path, default=[], metavar="RUN",
                   help="an earlier run to compare with (repeat for each): these runs' pooled p50 "
                        "ratios over those runs'")
    a = p.parse_args(argv)
    result = pool(a.runs)
    if a.against:
        result["against"] = {"runs": [r.name for r in a.against], "gpus": against(a.runs, a.against)}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    for label, e in result["gpus"].items():
        if not e["repetitions"]:
            print(f"{label} ({e['hp']}): no repetition with both fikit and solo_hp")
            continue
        print(f"{label} ({e['hp']}): {e['repetitions']} repetitions in {e['generations']} generations")
        for name in ("p50", "p99"):
            s = e[name]
            lo, hi = s["ci95"]
            lean = ""
            if s["verdict"] == "undecided":
                lean = f"; over it in {s['share_over_target']:.0%} of resamples"
            print(f"  HP {name} x solo {s['median']:.4f}, 95% interval {lo:.4f}-{hi:.4f}: "
                  f"{s['verdict']} (target <= {s['target']}{lean})")
            if len(s["per_run"]) > 1:
                print(f"    per run: {runs_text(s['per_run'])}")
        for name, f in e["floor_p50"].items():
            lo, hi = f["ci95"]
            print(f"  floor, p50: {name} {f['median']:.4f}, 95% interval {lo:.4f}-{hi:.4f}")
            if len(f["per_run"]) > 1:
                print(f"    per run: {runs_text(f['per_run'])}")
    if "against" in result:
        print(f"against {len(result['against']['runs'])} earlier runs (these runs' pooled p50 over theirs):")
        for label, parts in result["against"]["gpus"].items():
            for name, c in parts.items():
                lo, hi = c["ci95"]
                print(f"  {label}: {name} {c['ratio']:.4f}, 95% interval {lo:.4f}-{hi:.4f} "
                      f"({c['generations'][0]} generations over {c['generations'][1]}; "
                      f"not lower in {c['share_not_lower']:.0%} of resamples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
