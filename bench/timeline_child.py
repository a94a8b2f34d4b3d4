#!/usr/bin/env python3
"""One side of bench/timeline_pair.py: a bench model run under the PyTorch profiler for a short window.

Plain PyTorch (it never imports fikit). Builds the model, warms up, starts the profiler, then
touches READY and waits for GO (a file holding the window's start on CLOCK_MONOTONIC, in seconds)
so both sides of a pair run their window at the same instant. In the window HP serves requests
(back to back, or Poisson with --rate) and LP runs training / batch-inference steps.

Clock alignment: each process records, just before the window, CLOCK_MONOTONIC (shared by every
process of the machine) and opens a `fikit_marker` range under the profiler; the runner maps the
trace's timestamps to CLOCK_MONOTONIC by that marker. The GPU timestamps in the traces are CUPTI's,
converted by each process to its CPU clock: across two processes they agree only approximately
(expect microseconds, not nanoseconds).

Writes --trace (Chrome trace, kernels, runtime calls and annotations only, gzipped) and --meta
(JSON: marker, window, requests / steps as [start, end] on CLOCK_MONOTONIC).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

KEEP_CATS = {"kernel", "cuda_runtime", "cuda_driver", "user_annotation", "gpu_memcpy", "gpu_memset"}


def trim_trace(src: Path, dst: Path) -> int:
    """Keep what the timeline needs (the full CPU-op trace is tens of MB); returns events kept."""
    with src.open(encoding="utf-8") as f:
        data = json.load(f)
    evs = [
        e
        for e in data.get("traceEvents", [])
        if e.get("ph") == "X" and (e.get("cat") in KEEP_CATS or e.get("name") == "fikit_marker")
    ]
    with gzip.open(dst, "wt", encoding="utf-8") as f:
        json.dump({"traceEvents": evs, "baseTimeNanoseconds": data.get("baseTimeNanoseconds")}, f)
    return len(evs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--ready", required=True)
    p.add_argument("--go", required=True)
    p.add_argument("--trace", required=True, help="trimmed Chrome trace (.json.gz)")
    p.add_argument("--meta", required=True)
    p.add_argument("--cpus", default="")
    p.add_argument("--go-timeout-s", type=float, default=300.0)
    a = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import workloads
    from torch.profiler import ProfilerActivity, profile, record_function

    workloads.setup_determinism(0)
    wl = workloads.build(a.model, a.device, tiny=a.tiny, batch=None)
    if a.cpus:
        cpus = {int(x) for part in a.cpus.split(",") for x in _rng(part)}
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as e:
            print(f"timeline_child: cannot pin: {e}", file=sys.stderr)

    def sync() -> None:
        workloads.sync(a.device)

    t0 = time.monotonic()
    n = 0
    while n < 5 or time.monotonic() - t0 < a.warmup_s:
        wl.step()
        sync()
        n += 1
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
    recs: list[list[float]] = []
    marker: dict[str, Any] = {}
    with profile(activities=acts, record_shapes=False, with_stack=False) as prof:
        for _ in range(3):  # inside the profiler: whatever it initialises lazily happens here
            wl.step()
            sync()
        Path(a.ready).write_text(str(os.getpid()))
        deadline = time.monotonic() + a.go_timeout_s
        while not Path(a.go).exists():
            if time.monotonic() > deadline:
                print("timeline_child: no GO", file=sys.stderr)
                return 3
            time.sleep(0.002)
        time.sleep(0.01)  # the runner writes GO then renames it: let the content land
        start_at = float(Path(a.go).read_text().strip())
        while time.monotonic() < start_at - 0.02:
            time.sleep(0.001)
        marker["monotonic_ns"] = time.monotonic_ns()
        marker["wall_ns"] = time.time_ns()
        with record_function("fikit_marker"):
            pass
        end_at = start_at + a.seconds
        while time.monotonic() < start_at:
            pass
        if wl.role == "hp" and a.rate > 0:
            rng = random.Random(0)
            t_arr = start_at
            while True:
                t_arr += rng.expovariate(a.rate)
                if t_arr >= end_at:
                    break
                while time.monotonic() < t_arr:
                    time.sleep(0.0002)
                t_s = time.monotonic()
                wl.step()
                sync()
                recs.append([t_arr, t_s, time.monotonic()])
        else:
            while True:
                t_s = time.monotonic()
                if t_s >= end_at:
                    break
                wl.step()
                sync()
                recs.append([t_s, t_s, time.monotonic()])
    raw = Path(a.trace).with_suffix(".raw.json")
    t_exp = time.monotonic()
    prof.export_chrome_trace(str(raw))
    kept = trim_trace(raw, Path(a.trace))
    raw.unlink()
    meta = {
        "pid": os.getpid(),
        "model": a.model,
        "role": wl.role,
        "batch": wl.batch,
        "rate": a.rate,
        "marker": marker,
        "window": [start_at, end_at],
        "records": recs,
        "events_kept": kept,
        "export_s": round(time.monotonic() - t_exp, 2),
        "env": {
            k: os.environ.get(k)
            for k in (
                "LD_PRELOAD",
                "FIKIT_PRIO",
                "FIKIT_DOMAIN",
                "CUDA_MPS_CLIENT_PRIORITY",
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
                "CUDA_MPS_PIPE_DIRECTORY",
            )
            if os.environ.get(k)
        },
    }
    Path(a.meta).write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return 0


def _rng(part: str) -> range:
    if "-" in part:
        lo, hi = part.split("-", 1)
        return range(int(lo), int(hi) + 1)
    return range(int(part), int(part) + 1)


if __name__ == "__main__":
    sys.exit(main())
