#!/usr/bin/env python3
"""One workload of the interposition proof, as a plain PyTorch program (no fikit import).

Runs --warmup then --iters steps of a bench/workloads.py model, synchronising after each. With
--trace FILE the PyTorch profiler covers the whole process (from before the model is built to
the end), so its kernel count is comparable with what libfikit.so counts over the process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import workloads

    workloads.setup_determinism(0)
    t0 = time.monotonic()
    wl = workloads.build(args.workload, args.device, tiny=args.tiny, batch=args.batch)
    workloads.sync(args.device)
    t1 = time.monotonic()
    for _ in range(args.warmup):
        wl.step()
        workloads.sync(args.device)
    t2 = time.monotonic()
    for _ in range(args.iters):
        wl.step()
        workloads.sync(args.device)
    t3 = time.monotonic()
    del torch
    per_iter = (t3 - t2) * 1e3 / max(1, args.iters)
    return {
        "workload": args.workload,
        "build_s": round(t1 - t0, 3),
        "warmup_s": round(t2 - t1, 3),
        "iters": args.iters,
        "warmup": args.warmup,
        "ms_per_iter": round(per_iter, 4),
        "info": wl.info,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workload", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--trace", default="", help="write a chrome trace of the whole process here")
    p.add_argument("--out", default="", help="write a small JSON result here")
    args = p.parse_args(argv)
    if args.trace:
        import torch
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU]
        if args.device == "cuda":
            acts.append(ProfilerActivity.CUDA)
        with profile(activities=acts) as prof:
            res = run(args)
        t = time.monotonic()
        prof.export_chrome_trace(args.trace)
        res["trace_export_s"] = round(time.monotonic() - t, 3)
        del torch
    else:
        res = run(args)
    text = json.dumps(res)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
