#!/usr/bin/env python3
"""Pool the HP ratios of several verify_multigpu runs: per repetition fikit over the same
repetition's solo_hp (p50 and p99), their medians over all runs, and the median of each
generation of HP processes (a generation: the processes between two restarts).

    python3 bench/results/2026-11-26-2xh200/pool.py DIR [DIR ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(dirs: list[str]) -> None:
    for hp, model in (("hp0", "GPU 0"), ("hp1", "GPU 1")):
        p50: list[float] = []
        p99: list[float] = []
        gens: list[float] = []
        for d in dirs:
            rows = [json.loads(ln) for ln in (Path(d) / "raw.jsonl").read_text().splitlines()]
            by = {(r["rep"], r["mode"]): r for r in rows if r.get("ok") and "hp" in r}
            per_gen: dict[int, list[float]] = {}
            for (rep, mode), a in sorted(by.items()):
                b = by.get((rep, "solo_hp"))
                if mode != "fikit" or not b or hp not in a["hp"] or hp not in b["hp"]:
                    continue
                p50.append(a["hp"][hp]["p50_ms"] / b["hp"][hp]["p50_ms"])
                p99.append(a["hp"][hp]["p99_ms"] / b["hp"][hp]["p99_ms"])
                per_gen.setdefault(int(a.get("generation", 0)), []).append(p50[-1])
            medians = [round(statistics.median(v), 3) for _, v in sorted(per_gen.items())]
            print(f"{model} {Path(d).name}: per generation, fikit/solo p50 {medians}")
            gens += medians
        m50, m99, mg = statistics.median(p50), statistics.median(p99), statistics.median(gens)
        print(f"{model} pooled: {len(p50)} repetitions, fikit/solo p50 {m50:.4f}, p99 {m99:.4f}; "
              f"{len(gens)} generations, median {mg:.4f}")


if __name__ == "__main__":
    main(sys.argv[1:])
