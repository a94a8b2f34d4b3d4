#!/usr/bin/env python3
"""overhead_probe.py's in-process toggles, each with a 95% interval.

A toggle variant serves one HP's requests alternately in two states (measuring on and off, or the
library on and bypassed) and writes a window a row: that window's p50 (and p99) latency in one
state and in the other.  overhead.json keeps the median of those windows' ratios and their range,
which says little of how well the median is known: a few windows in a hundred run through a slow
spell of the host and land far out.  This prints, per model and variant, the median ratio with a
95% interval from a bootstrap over windows (each window a sample, as pool_multigpu.py's bootstrap
takes a generation of HP processes), so that two probes' figures can be told apart or not:

    python3 bench/toggle_ci.py bench/results/2026-11-26-h100-abprobe [more result folders] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from pool_multigpu import interval, jsonl_rows, resampled


def windows(jsonl: Path) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """A probe's toggle windows, (p50, p99) of on over off, by (model, variant)."""
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in jsonl_rows(jsonl, "toggle_ci"):
        on, off = row.get("on") or {}, row.get("off") or {}
        if not on.get("n") or not off.get("n") or not off.get("p50_ms") or not off.get("p99_ms"):
            continue  # not a toggle window, or one state served no request
        ratio = (on["p50_ms"] / off["p50_ms"], on["p99_ms"] / off["p99_ms"])
        out.setdefault((row["model"], row["variant"]), []).append(ratio)
    return out


def summarize(ratios: list[tuple[float, float]]) -> dict[str, Any]:
    """The median p50 and p99 ratios of these windows, each with its 95% bootstrap interval."""
    gens = [[r] for r in ratios]
    out: dict[str, Any] = {"windows": len(ratios)}
    for q, name in ((0, "p50"), (1, "p99")):
        lo, hi = interval(resampled(gens, q))
        med = statistics.median(r[q] for r in ratios)
        out[name] = {"median": round(med, 4), "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def probes(folder: Path) -> list[Path]:
    """A result folder's overhead.jsonl files: its own, or its probe-<build>/ folders' (price.sh)."""
    own = folder / "overhead.jsonl"
    found = [own] if own.is_file() else sorted(folder.glob("probe-*/overhead.jsonl"))
    if not found:
        raise SystemExit(f"toggle_ci: {folder}: no overhead.jsonl (an overhead_probe.py or price.sh result?)")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="overhead_probe.py or price.sh result folders")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result: dict[str, Any] = {}
    for folder in a.folders:
        for jsonl in probes(folder):
            name = f"{folder.name}/{jsonl.parent.name}" if jsonl.parent != folder else folder.name
            result[name] = {f"{m} {v}": summarize(r) for (m, v), r in sorted(windows(jsonl).items())}
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    for name, rows in result.items():
        for key, s in rows.items():
            (lo50, hi50), (lo99, hi99) = s["p50"]["ci95"], s["p99"]["ci95"]
            print(f"{name} {key}: {s['windows']} windows, on over off p50 x{s['p50']['median']:.4f} "
                  f"({lo50:.4f}-{hi50:.4f}), p99 x{s['p99']['median']:.4f} ({lo99:.4f}-{hi99:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
