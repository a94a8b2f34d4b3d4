#!/usr/bin/env python3
"""How far a client's kernel-duration predictions run over its kernels' measured runs.

A kernel's predicted duration is taken between its recent trend and the longest of its recent
runs (interpose/src/measure.c): a long run makes the prediction long until it leaves the ring.
Every launch moves the client's predicted end of work (busy_until) on by it, and the clients
below are held until then.  So predictions far over what a kernel usually takes hold the
clients below for nothing.  This reads the FIKIT_STATS files the library writes at exit (one a
process; verify_multigpu.py keeps them under RESULT/stats/, packed
there once committed) and says, per file and in all:

  over_share   the share of launches whose kernel is predicted over FACTOR x its median run
  pred_x_p50   the GPU time all launches are predicted to take over what their kernels' median
               runs add up to (1.0: predictions at the median)

    python3 bench/pred_skew.py bench/results/2026-11-26-2xh100-run26/stats/*fikit-hp*.json.gz \
        [--factor 10] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any


def skew(stats: dict[str, Any], factor: float) -> dict[str, float | int]:
    """Launches of measured kernels, those of kernels predicted over factor x their median run,
    and the predicted and median GPU time of all of them (us)."""
    launches = over = 0
    pred_us = p50_us = 0.0
    for k in stats.get("kernels", []):
        d = k.get("dur_us") or {}
        if not d.get("n"):
            continue  # never measured: predicted by the domain's default, not by its runs
        n = int(k["count"])
        launches += n
        if d["pred"] > factor * d["p50"]:
            over += n
        pred_us += n * d["pred"]
        p50_us += n * d["p50"]
    return {"launches": launches, "over": over, "pred_us": pred_us, "p50_us": p50_us}


def ratios(s: dict[str, float | int]) -> dict[str, float | None]:
    return {"over_share": round(s["over"] / s["launches"], 4) if s["launches"] else None,
            "pred_x_p50": round(s["pred_us"] / s["p50_us"], 2) if s["p50_us"] else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="FIKIT_STATS files")
    p.add_argument("--factor", type=float, default=10.0,
                   help="a prediction over this x the median run counts")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    total: dict[str, float | int] = {"launches": 0, "over": 0, "pred_us": 0.0, "p50_us": 0.0}
    per_file: dict[str, Any] = {}
    for f in a.files:
        try:
            # committed results keep them packed (bench/pack_results.py)
            data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
            s = skew(json.loads(data), a.factor)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"pred_skew: {f}: not a FIKIT_STATS file ({e})") from None
        per_file[str(f)] = {"launches": s["launches"], **ratios(s)}
        for key in total:
            total[key] += s[key]
    out = {"factor": a.factor, "files": per_file, "all": {"launches": total["launches"], **ratios(total)}}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    for name, r in [*per_file.items(), ("all", out["all"])]:
        print(f"{name}: {r['launches']} launches of measured kernels, {r['over_share']} of them predicted "
              f"over {a.factor:g}x their kernel's median run; "
              f"predicted GPU time {r['pred_x_p50']}x the medians'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
