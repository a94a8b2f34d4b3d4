#!/usr/bin/env python3
"""A kernel-level timeline of one HP/LP pair in one sharing mode (issue 4: where HP's time goes).

Both processes (bench/timeline_child.py: plain PyTorch) run the pair's models under the PyTorch
profiler for about --seconds of co-running, started at one CLOCK_MONOTONIC instant. Each writes a
Chrome trace; this script maps both onto CLOCK_MONOTONIC by the `fikit_marker` range each process
opens right after reading that clock, and draws one PNG: HP requests, HP kernels, HP's gaps (time in
a request with no HP kernel running) with the part where a launched HP kernel waited to start, and
LP kernels, on one time axis. The GPU timestamps come from each process's CUPTI, converted to its
own CPU clock, so the two processes' kernels line up only approximately (microseconds); the report
says so.

timeline.json says where HP's request time went: `kernel` (an HP kernel running), `waiting` (an HP
kernel launched but not yet started, its stream otherwise free), `host` (nothing of HP's queued:
the host prepares the next launch or returns from a sync), each split by whether LP kernels were
running meanwhile; plus HP gap and kernel sizes and LP kernel sizes.

Modes: timeslice, mps, mps_prio, mps_prio_smcapNN, fikit, fikit_strict, fikit_corunNN. fikit modes
use a self-granted domain (no daemon: the library's scheduling is the same) with MPS.

    python3 bench/timeline_pair.py --pair bert:vgg16_infer --mode fikit_corun50 \\
        --lib build/gpu/interpose/libfikit.so --out bench/results/X/timeline
    python3 bench/timeline_pair.py --render-only DIR     # re-analyse DIR's traces (no GPU)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import benchlib
import run_pairs

CHILD = str(benchlib.BENCH_DIR / "timeline_child.py")
Interval = tuple[float, float]


# ---------------------------------------------------------------------------------------------- intervals


def union(iv: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(x for x in iv if x[1] > x[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def intersect(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Both sorted unions."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if s < e:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """a minus b, both sorted unions."""
    out: list[Interval] = []
    j = 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def total(iv: list[Interval]) -> float:
    return sum(e - s for s, e in iv)


def q(xs: list[float], p: float) -> float | None:
    v = benchlib.quantile(xs, p)
    return None if v is None else round(v, 2)


# ---------------------------------------------------------------------------------------------- traces


def load_trace(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        data = json.load(f)
    evs = data.get("traceEvents", data) if isinstance(data, dict) else data
    return [e for e in evs if isinstance(e, dict)]


def side(events: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Kernels and launch calls of one process, in microseconds of CLOCK_MONOTONIC."""
    marks = [e for e in events if e.get("name") == "fikit_marker" and e.get("ph") == "X"]
    if not marks:
        raise ValueError(f"pid {meta.get('pid')}: no fikit_marker event in the trace")
    off = float(meta["marker"]["monotonic_ns"]) / 1000.0 - float(marks[-1]["ts"])
    kernels, launches = [], []
    for e in events:
        if e.get("ph") != "X" or "ts" not in e:
            continue
        s = float(e["ts"]) + off
        d = float(e.get("dur", 0.0))
        corr = (e.get("args") or {}).get("correlation")
        cat = e.get("cat")
        if cat == "kernel":
            kernels.append({"s": s, "e": s + d, "name": str(e.get("name", ""))[:120], "corr": corr})
        elif cat in ("cuda_runtime", "cuda_driver") and "aunch" in str(e.get("name", "")):
            launches.append({"s": s, "e": s + d, "name": str(e.get("name", "")), "corr": corr})
    kernels.sort(key=lambda k: k["s"])
    return {
        "model": meta.get("model"),
        "role": meta.get("role"),
        "pid": meta.get("pid"),
        "offset_us": off,
        "kernels": kernels,
        "launches": launches,
        "records": meta.get("records") or [],
        "window": meta.get("window"),
    }


# ---------------------------------------------------------------------------------------------- analysis


def analyze(hp: dict[str, Any], lps: list[dict[str, Any]]) -> dict[str, Any]:
    """Where HP's request time went, in the common window of the sides (ms)."""
    w0 = max(float(s["window"][0]) for s in [hp, *lps]) * 1e6
    w1 = min(float(s["window"][1]) for s in [hp, *lps]) * 1e6
    win = [(w0, w1)]
    req = intersect(union((r[1] * 1e6, r[2] * 1e6) for r in hp["records"]), win)
    hk = [k for k in hp["kernels"] if k["e"] > w0 and k["s"] < w1]
    lk = [k for s in lps for k in s["kernels"] if k["e"] > w0 and k["s"] < w1]
    K = union((k["s"], k["e"]) for k in hk)
    L = union((k["s"], k["e"]) for k in lk)
    launch_at = {x["corr"] for x in hp["launches"] if x.get("corr") is not None}
    unmatched = sum(1 for k in hk if k["corr"] not in launch_at)
    waits = _waits(hp)
    RK = intersect(req, K)
    gap = subtract(req, K)
    W = intersect(gap, union(waits))
    host = subtract(gap, W)
    ms = 1e-3
    req_ms = total(req) * ms
    parts = {
        "kernel": total(RK) * ms,
        "kernel_with_lp": total(intersect(RK, L)) * ms,
        "waiting": total(W) * ms,
        "waiting_with_lp": total(intersect(W, L)) * ms,
        "host": total(host) * ms,
        "host_with_lp": total(intersect(host, L)) * ms,
    }
    # HP gaps: between consecutive HP kernels inside one request
    gaps_us = [g[1] - g[0] for g in subtract(intersect(req, [(K[0][0], K[-1][1])]) if K else [], K)]
    lp_launch = [x["e"] - x["s"] for s in lps for x in s["launches"] if x["e"] > w0 and x["s"] < w1]
    lat = [(r[2] - r[0]) * 1e3 for r in hp["records"] if w0 <= r[0] * 1e6 < w1]
    return {
        "window_ms": round((w1 - w0) * ms, 3),
        "hp": {
            "model": hp["model"],
            "pid": hp["pid"],
            "requests": len(lat),
            "p50_ms": q(lat, 0.5),
            "p99_ms": q(lat, 0.99),
        },
        "lp": [{"model": s["model"], "pid": s["pid"]} for s in lps],
        "hp_request_ms": round(req_ms, 3),
        "hp_time_ms": {k: round(v, 3) for k, v in parts.items()},
        "hp_time_share": {k: (round(v / req_ms, 4) if req_ms else None) for k, v in parts.items()},
        "hp_kernels": {
            "n": len(hk),
            "dur_us_p50": q([k["e"] - k["s"] for k in hk], 0.5),
            "dur_us_p90": q([k["e"] - k["s"] for k in hk], 0.9),
            "launch_unmatched": unmatched,
        },
        "hp_gaps_us": {
            "n": len(gaps_us),
            "p50": q(gaps_us, 0.5),
            "p90": q(gaps_us, 0.9),
            "share_of_gap_time_in_gaps_over_50us": round(sum(g for g in gaps_us if g >= 50) / sum(gaps_us), 4)
            if gaps_us
            else None,
        },
        "lp_kernels": {
            "n": len(lk),
            "busy_ms": round(total(intersect(L, win)) * ms, 3),
            "dur_us_p50": q([k["e"] - k["s"] for k in lk], 0.5),
            "dur_us_p90": q([k["e"] - k["s"] for k in lk], 0.9),
            "dur_us_p99": q([k["e"] - k["s"] for k in lk], 0.99),
        },
        "lp_launch_calls": {
            "n": len(lp_launch),
            "total_ms": round(sum(lp_launch) * ms, 3),
            "over_100us": sum(1 for x in lp_launch if x > 100),
        },
        "clock_note": "both traces mapped to CLOCK_MONOTONIC by each process's fikit_marker; GPU times are "
        "each process's CUPTI conversion to its CPU clock, so cross-process alignment is approximate "
        "(microseconds)",
        "offsets_us": {"hp": hp["offset_us"], "lp": [s["offset_us"] for s in lps]},
    }


# ---------------------------------------------------------------------------------------------- rendering


def render(
    hp: dict[str, Any], lps: list[dict[str, Any]], res: dict[str, Any], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w0 = max(float(s["window"][0]) for s in [hp, *lps]) * 1e6
    w1 = min(float(s["window"][1]) for s in [hp, *lps]) * 1e6
    req = intersect(union((r[1] * 1e6, r[2] * 1e6) for r in hp["records"]), [(w0, w1)])
    K = union((k["s"], k["e"]) for k in hp["kernels"])
    L = union((k["s"], k["e"]) for s in lps for k in s["kernels"])
    gap = subtract(req, K)
    # the zoom: the slowest HP request, with a little room on either side
    recs = [r for r in hp["records"] if w0 <= r[1] * 1e6 < w1]
    if recs:
        worst = max(recs, key=lambda r: r[2] - r[1])
        pad = (worst[2] - worst[1]) * 1e6 * 0.15
        z0, z1 = worst[1] * 1e6 - pad, worst[2] * 1e6 + pad
    else:
        z0, z1 = w0, min(w1, w0 + 20000)

    def bars(ax: Any, iv: list[Interval], y: float, color: str, lo: float, hi: float, h: float = 0.8) -> None:
        xs = [((s - lo) / 1e3, (e - s) / 1e3) for s, e in iv if e > lo and s < hi]
        if xs:
            ax.broken_barh(xs, (y - h / 2, h), facecolors=color, linewidth=0)

    fig, axes = plt.subplots(2, 1, figsize=(14, 6.5))
    hp_wait = intersect(gap, union(_waits(hp)))
    for ax, (lo, hi), label in (
        (axes[0], (w0, w1), "whole window"),
        (axes[1], (z0, z1), "slowest HP request"),
    ):
        bars(ax, req, 4, "#9ecae1", lo, hi)
        bars(ax, subtract(gap, hp_wait), 3, "#d9d9d9", lo, hi)
        bars(ax, hp_wait, 3, "#de2d26", lo, hi)
        bars(ax, K, 2, "#08519c", lo, hi)
        bars(ax, L, 1, "#fd8d3c", lo, hi)
        ax.set_yticks([4, 3, 2, 1])
        ax.set_yticklabels(
            ["HP requests", "HP gaps (grey) / waiting (red)", "HP kernels", "LP kernels"], fontsize=8
        )
        ax.set_xlim(0, (hi - lo) / 1e3)
        ax.set_ylim(0.4, 4.6)
        ax.set_xlabel(f"ms from {label} start", fontsize=8)
        ax.grid(axis="x", linewidth=0.3)
    sh = res.get("hp_time_share") or {}
    fig.suptitle(
        f"{title}\nHP request time: kernel {_pct(sh.get('kernel'))}, waiting {_pct(sh.get('waiting'))} "
        f"(with LP running {_pct(sh.get('waiting_with_lp'))}), host {_pct(sh.get('host'))}; "
        f"HP p50 {res['hp'].get('p50_ms')} ms; clocks aligned by marker (approximate across processes)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def analyze_dir(d: Path, title: str | None = None) -> dict[str, Any]:
    """Read DIR/{hp,lp0,lp1..}.{trace.json.gz,meta.json}; write DIR/timeline.json and timeline.png."""
    metas = {p.name.split(".")[0]: json.loads(p.read_text()) for p in sorted(d.glob("*.meta.json"))}
    if "hp" not in metas:
        raise SystemExit(f"timeline_pair: no hp.meta.json in {d}")
    sides = {
        name: side(load_trace(next(iter(sorted(d.glob(f"{name}.trace.json*"))))), m)
        for name, m in metas.items()
    }
    hp = sides.pop("hp")
    lps = [sides[k] for k in sorted(sides)]
    res = analyze(hp, lps)
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        info = json.loads((d / "run.json").read_text())
    res = {**info, **res}
    ttl = title or f"{info.get('pair', '?')} in mode {info.get('mode', '?')} ({info.get('gpu', '')})"
    render(hp, lps, res, d / "timeline.png", ttl)
    benchlib.write_json(d / "timeline.json", res)
    return res


def _waits(hp: dict[str, Any]) -> list[Interval]:
    """Per HP kernel: from its launch (or its predecessor's end, if later) to its start."""
    launch_at = {x["corr"]: x["s"] for x in hp["launches"] if x.get("corr") is not None}
    out, prev = [], float("-inf")
    for k in hp["kernels"]:
        t = launch_at.get(k["corr"])
        if t is not None:
            out.append((max(t, prev), k["s"]))
        prev = max(prev, k["e"])
    return out


# ---------------------------------------------------------------------------------------------- running


def mode_env(
    mode: str, role: str, prio: str, base: Path, mps: benchlib.Mps, lib: str | None, dom: Path | None
) -> dict[str, str]:
    env = run_pairs.base_env()
    nomps = base / "nomps"
    nomps.mkdir(exist_ok=True)
    env.update({"CUDA_MPS_PIPE_DIRECTORY": str(nomps), "CUDA_MPS_LOG_DIRECTORY": str(nomps)})
    if mode != "timeslice":
        env.update(mps.env())
    if role == "lp" and prio == "low" and (mode.startswith("mps_prio") or mode.startswith("fikit")):
        env["CUDA_MPS_CLIENT_PRIORITY"] = "1"
    cap = run_pairs.smcap_of(mode, 60)
    if role == "lp" and cap is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(cap)
    if mode.startswith("fikit") and lib is not None and dom is not None:
        env.update(
            {
                "LD_PRELOAD": lib,
                "FIKIT_PRIO": "high" if role == "hp" else prio,
                "FIKIT_DOMAIN": str(dom),
                "FIKIT_SOCKET": str(base / "no-daemon.sock"),
                "FIKIT_PROG": f"timeline-{role}",
            }
        )
    return env


def record(a: argparse.Namespace) -> Path:
    pair = run_pairs.parse_pair(a.pair)
    mode = a.mode
    if mode not in ("timeslice", "mps", "mps_prio", "fikit", "fikit_strict") and not (
        mode.startswith("mps_prio_smcap") or mode.startswith("fikit_corun")
    ):
        raise SystemExit(f"timeline_pair: mode {mode!r} has no co-running to show")
    out = Path(a.out) / run_pairs.safe(f"{a.pair}-{mode}")
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="fkt", dir="/tmp"))
    lib = benchlib.find_lib(a.lib)
    mps = benchlib.Mps(base, dry_run=a.dry_run or a.device == "cpu")
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    info: dict[str, Any] = benchlib.env_info(a.device)
    info.update({"pair": a.pair, "mode": mode, "seconds": a.seconds, "lib": lib, "via": "domain"})
    if a.commit:
        info["commit"] = a.commit
    try:
        if mode != "timeslice" and not mps.start() and not mps.dry_run:
            raise SystemExit(f"timeline_pair: MPS did not start: {mps.error}")
        info["mps"] = mps.started
        dom: Path | None = None
        if mode.startswith("fikit"):
            if lib is None and not a.dry_run:
                raise SystemExit("timeline_pair: fikit modes need --lib")
            if lib is not None:
                dom = base / "dom"
                benchlib.create_domain(
                    dom,
                    lib,
                    mode="strict" if mode == "fikit_strict" else "fikit",
                    corun_sm_pct=run_pairs.corun_of(mode, 50) or 0,
                )
        members = [("hp", pair.hp, "high", pair.rate)] + [
            (f"lp{i}", m, prio, 0.0) for i, (m, prio) in enumerate(pair.lps)
        ]
        go = base / "go"
        for name, model, prio, rate in members:
            role = "hp" if name == "hp" else "lp"
            argv = [
                sys.executable,
                CHILD,
                "--model",
                model,
                "--device",
                a.device,
                "--seconds",
                str(a.seconds),
                "--warmup-s",
                str(a.warmup_s),
                "--ready",
                str(base / f"{name}.ready"),
                "--go",
                str(go),
                "--trace",
                str(out / f"{name}.trace.json.gz"),
                "--meta",
                str(out / f"{name}.meta.json"),
                "--cpus",
                a.hp_cores if role == "hp" else a.lp_cores,
                "--rate",
                str(rate),
            ]
            if a.device == "cpu":
                argv.append("--tiny")
            env = mode_env(mode, role, prio, base, mps, lib, dom)
            logf = (out / f"{name}.log").open("wb")
            procs.append(
                (
                    name,
                    subprocess.Popen(
                        argv, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=str(benchlib.REPO_ROOT)
                    ),
                )
            )
            logf.close()
        deadline = time.monotonic() + a.startup_timeout
        while not all((base / f"{n}.ready").exists() for n, _ in procs):
            dead = [(n, p.returncode) for n, p in procs if p.poll() is not None]
            if dead:
                raise SystemExit(f"timeline_pair: {dead} exited before the window; see {out}/*.log")
            if time.monotonic() > deadline:
                raise SystemExit("timeline_pair: children not ready in time")
            time.sleep(0.05)
        tmp = base / "go.tmp"
        tmp.write_text(f"{time.monotonic() + 0.5:.6f}")
        tmp.rename(go)
        for n, p in procs:
            rc = p.wait(timeout=a.seconds + a.export_timeout)
            if rc != 0:
                raise SystemExit(f"timeline_pair: {n} exited with {rc}; see {out}/{n}.log")
        benchlib.write_json(out / "run.json", info)
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        mps.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="bert:vgg16_infer")
    p.add_argument("--mode", default="fikit_corun50")
    p.add_argument("--out", default=None, help="a folder per (pair, mode) is made in it")
    p.add_argument("--lib", default=None)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dry-run", action="store_true", help="no MPS (CPU self-check)")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--hp-cores", default="2-3")
    p.add_argument("--lp-cores", default="4-11")
    p.add_argument("--startup-timeout", type=float, default=240.0)
    p.add_argument("--export-timeout", type=float, default=180.0)
    p.add_argument("--commit", default=os.environ.get("FIKIT_COMMIT"))
    p.add_argument("--render-only", default=None, metavar="DIR", help="analyse and draw DIR's traces again")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # `timeout`: children killed and MPS stopped in finally
    if a.render_only:
        d = Path(a.render_only)
    else:
        if not a.out:
            p.error("--out is needed to record")
        d = record(a)
    res = analyze_dir(d)
    sh = res["hp_time_share"]
    print(
        f"timeline_pair: {d}/timeline.png, timeline.json: HP {res['hp']['requests']} requests, "
        f"kernel {_pct(sh['kernel'])}, waiting {_pct(sh['waiting'])} "
        f"(with LP {_pct(sh['waiting_with_lp'])}), "
        f"host {_pct(sh['host'])} (with LP {_pct(sh['host_with_lp'])}); LP kernels {res['lp_kernels']['n']}"
    )
    return 0


def _terminate(signum: int, frame: Any) -> None:
    # once: `timeout` signals the process and then its whole group, which would cut the cleanup short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
