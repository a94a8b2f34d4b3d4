#!/usr/bin/env python3
"""Checks of the bench harness that need no GPU (run before spending GPU time).

    python3 bench/selfcheck.py            # analysis logic on synthetic profiler traces and FIKIT_STATS
    python3 bench/selfcheck.py --e2e      # plus run_pairs --dry-run on CPU and summarize, end to end

The synthetic trace follows the PyTorch (kineto) chrome-trace shape: kernels are events with
"cat": "kernel" and args grid/block/correlation; runtime and driver calls are "cuda_runtime" /
"cuda_driver" events sharing the correlation id of the kernel they launched; kernels replayed
from a CUDA graph carry the correlation id of the cudaGraphLaunch call.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
import ctl
import run_pairs
import verify_interpose as vi

FAILS: list[str] = []


def check(cond: bool, what: str) -> None:
    print(f"  {'ok ' if cond else 'FAIL'} {what}")
    if not cond:
        FAILS.append(what)


def ev(cat: str, name: str, ts: float, dur: float, corr: int, tid: int = 1, **args: Any) -> dict[str, Any]:
    return {
        "ph": "X",
        "cat": cat,
        "name": name,
        "pid": 1,
        "tid": tid,
        "ts": ts,
        "dur": dur,
        "args": {"correlation": corr, **args},
    }


ELT_DEM = (
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
    "std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)"
)
ELT_MANGLED_TRUNC = (
    "_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEESt5arrayIPcLm1EEEEviT0_T1_"[:127]
)
ANON_DEM = (
    "void at::native::(anonymous namespace)::softmax_warp_forward<float, float, float, 8, false>(float*, int)"
)
ANON_MANGLED = "_ZN2at6native12_GLOBAL__N_120softmax_warp_forwardIfffLi8ELb0EEEvPT0_i"


def synthetic() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    e: list[dict[str, Any]] = []
    t = 0.0
    corr = 100
    # 5 eager elementwise launches through cudaLaunchKernel (runtime), each nesting a driver call
    for _ in range(5):
        corr += 1
        e.append(ev("cuda_runtime", "cudaLaunchKernel", t, 5, corr))
        e.append(ev("cuda_driver", "cuLaunchKernel", t + 1, 2, corr + 1000))  # nested: same launch
        e.append(ev("kernel", ELT_DEM, t + 10, 2.0, corr, tid=7, grid=[1, 1, 1], block=[128, 1, 1]))
        t += 20
    # 3 softmax launches via cudaLaunchKernelExC
    for _ in range(3):
        corr += 1
        e.append(ev("cuda_runtime", "cudaLaunchKernelExC", t, 5, corr))
        e.append(ev("kernel", ANON_DEM, t + 10, 20.0, corr, tid=7, grid=[64, 1, 1], block=[256, 1, 1]))
        t += 40
    # 2 Triton launches straight through the driver
    for _ in range(2):
        corr += 1
        e.append(ev("cuda_driver", "cuLaunchKernelEx", t, 4, corr))
        e.append(ev("kernel", "add_kernel", t + 10, 3.0, corr, tid=7, grid=[1024, 1, 1], block=[128, 1, 1]))
        t += 20
    # capture: 2 launches that produce no kernel, then 4 graph replays of 2 kernels each
    for _ in range(2):
        corr += 1
        e.append(ev("cuda_runtime", "cudaLaunchKernel", t, 5, corr))
        t += 10
    for _ in range(4):
        corr += 1
        e.append(ev("cuda_runtime", "cudaGraphLaunch", t, 8, corr))
        e.append(ev("kernel", ELT_DEM, t + 10, 2.0, corr, tid=7, grid=[1, 1, 1], block=[128, 1, 1]))
        e.append(ev("kernel", ANON_DEM, t + 13, 20.0, corr, tid=7, grid=[64, 1, 1], block=[256, 1, 1]))
        t += 50
    e.append({"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 1, "pid": 1, "tid": 1})
    stats = {
        "launches": {
            "cuLaunchKernel": 7,
            "cuLaunchKernelEx": 5,
            "cuLaunchCooperativeKernel": 0,
            "cuGraphLaunch": 4,
        },
        "kernels": [
            {
                "id": "00000000000000a1",
                "name": ELT_MANGLED_TRUNC,
                "count": 7,
                "grid": [1, 1, 1],
                "block": [128, 1, 1],
                "smem": 0,
                "dur_us": {"n": 5, "mean": 2.1, "p50": 2.1, "p99": 2.2},
            },
            {
                "id": "00000000000000a2",
                "name": ANON_MANGLED,
                "count": 3,
                "grid": [64, 1, 1],
                "block": [256, 1, 1],
                "smem": 0,
                "dur_us": {"n": 3, "mean": 19.0, "p50": 19.0, "p99": 19.5},
            },
            {
                "id": "00000000000000a3",
                "name": "add_kernel",
                "count": 2,
                "grid": [1024, 1, 1],
                "block": [128, 1, 1],
                "smem": 0,
                "dur_us": {"n": 2, "mean": 3.1, "p50": 3.1, "p99": 3.1},
            },
        ],
        "graphs": [
            {"id": "00000000000000g1", "count": 4, "dur_us": {"n": 4, "mean": 24.0, "p50": 24.0, "p99": 24.0}}
        ],
    }
    return e, stats


def check_analysis(tmp: Path) -> None:
    print("names")
    check(vi.base_name(ELT_DEM) == "at::native::vectorized_elementwise_kernel", "demangled template name")
    check(
        vi.base_name(ELT_MANGLED_TRUNC) == "at::native::vectorized_elementwise_kernel",
        "truncated mangled name",
    )
    check(
        vi.base_name(ANON_DEM) == "at::native::anon::softmax_warp_forward", "anonymous namespace, demangled"
    )
    check(
        vi.base_name(ANON_MANGLED) == "at::native::anon::softmax_warp_forward", "anonymous namespace, mangled"
    )
    check(vi.base_name("add_kernel") == "add_kernel", "plain C name")
    if shutil.which("c++filt"):
        d = vi.demangle_all([ANON_MANGLED, "add_kernel"])
        check(vi.base_name(d[ANON_MANGLED]) == "at::native::anon::softmax_warp_forward", "c++filt round trip")
    print("trace and stats")
    events, stats = synthetic()
    prof = vi.analyze_trace(events)
    check(prof["kernels_total"] == 18, f"kernels_total 18 (got {prof['kernels_total']})")
    check(prof["kernels_graph"] == 8, f"graph kernels 8 (got {prof['kernels_graph']})")
    check(prof["kernels_nongraph"] == 10, f"non-graph kernels 10 (got {prof['kernels_nongraph']})")
    check(prof["captured_calls"] == 2, f"captured launch calls 2 (got {prof['captured_calls']})")
    check(
        prof["launch_calls"] == 12,
        f"launch calls 12, nested driver calls not double counted (got {prof['launch_calls']})",
    )
    check(prof["graph_launch_calls"] == 4, "graph launches 4")
    check(
        abs((prof["graph_span_us_mean"] or 0) - 23.0) < 1e-6,
        f"graph span 23 us (got {prof['graph_span_us_mean']})",
    )
    sp = tmp / "stats.json"
    sp.write_text(json.dumps(stats))
    st = vi.analyze_stats(sp)
    check(st["kernel_launches"] == 12 and st["graph_launches"] == 4, "stats launch counts")
    check(st["kernel_launches"] == prof["kernels_nongraph"] + prof["captured_calls"], "count rule matches")
    dur = vi.compare_durations(st["_kernels"], prof["_table"])
    check(dur["matched"] == 3, f"3 kernels matched by name+grid+block (got {dur['matched']}: {dur})")
    check(dur["within_10pct"] is True, f"durations within 10% (median {dur['median_abs_dev']})")
    st2 = vi.analyze_stats(sp)
    check(st["ids"] == st2["ids"], "ids compare equal across identical stats")
    # Both modes at once: the sampled run's events over-read the short kernels, the profiling run's
    # CUPTI records do not; the 10 % verdict is the profiling mode's.
    sampled = json.loads(json.dumps(stats))
    sampled["timing"] = "events"
    for k in sampled["kernels"]:
        if k["name"] != ANON_MANGLED:
            k["dur_us"] = {"n": k["count"], "mean": 6.0, "p50": 6.0, "p99": 6.5}
    profiled = json.loads(json.dumps(stats))
    profiled["timing"] = "cupti"
    profiled["cupti"] = {"records": 18, "timed": 10, "graph": 8, "ignored": 0, "unmatched": 0}
    for name, d in (("sampled", sampled), ("profiled", profiled)):
        (tmp / f"{name}.json").write_text(json.dumps(d))
    v = vi.duration_verdict(
        vi.analyze_stats(tmp / "sampled.json"), vi.analyze_stats(tmp / "profiled.json"), prof
    )
    check(
        v["within_10pct"] is True and v["profile_timing"] == "cupti" and v["profile"]["matched"] == 3,
        f"profiling mode within 10% by CUPTI ({v.get('median_abs_dev')}, {v.get('profile_timing')})",
    )
    check(
        (v["median_abs_dev_sampled"] or 0) > 0.5 and v["sampled"]["timing"] == "events",
        f"sampled mode reported beside it ({v.get('median_abs_dev_sampled')})",
    )
    check(v["profile"].get("graph_ratio") is not None, "graph launches compared in both modes")
    only_sampled = vi.duration_verdict(vi.analyze_stats(tmp / "sampled.json"), None, prof)
    check(only_sampled["within_10pct"] is False, "no profiling run: no verdict")
    print("window statistics")
    recs = [[0.0 + i * 0.01, 0.0 + i * 0.01, 0.005 + i * 0.01] for i in range(100)]
    h = ctl.hp_stats(recs, [(0.2, 0.8)])
    check(h["n"] == 60 and abs(h["p50_ms"] - 5.0) < 1e-6, f"hp_stats n=60 p50=5ms (got {h})")
    lrecs = [[i * 0.3, (i + 1) * 0.3] for i in range(10)]
    lp = ctl.lp_stats(lrecs, [(0.45, 2.25)], batch=64)
    check(abs(lp["its"] - 1 / 0.3) < 1e-3, f"lp_stats fractional iterations = 3.333 it/s (got {lp['its']})")
    print("pair specs")
    p = run_pairs.parse_pair("resnet50%100:vgg16_infer@normal+gpt2_train")
    check(p.rate == 100 and p.lps == [("vgg16_infer", "normal"), ("gpt2_train", "low")], "pair syntax")
    for bad in ("resnet50_train:vgg16_infer", "resnet50:nosuch", "resnet50"):
        try:
            run_pairs.parse_pair(bad)
            check(False, f"rejects {bad}")
        except ValueError:
            check(True, f"rejects {bad}")
    check(
        run_pairs.smcap_of("mps_prio_smcap75", 60) == 75 and run_pairs.smcap_of("mps_prio_smcap", 60) == 60,
        "smcap mode names",
    )
    cfg = run_pairs.Daemon(tmp, None, True, 150, None, ["x"]).config_text()
    check('mode = "manage"' in cfg and "budget_us = 150" in cfg, "daemon config text")
    if (benchlib.REPO_ROOT / "fikitd" / "config.py").exists():
        cp = tmp / "cfg.toml"
        cp.write_text(cfg)
        r = subprocess.run(
            [sys.executable, "-m", "fikitd.main", "--check-config", str(cp)],
            cwd=str(benchlib.REPO_ROOT),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        check(
            r.returncode == 0,
            f"fikitd --check-config accepts the runner's config ({r.stdout.strip()}"
            f"{r.stderr.strip()[-300:]})",
        )


def e2e(tmp: Path) -> None:
    print("end to end on CPU (run_pairs --dry-run, summarize)")
    out = tmp / "pairs"
    cmd = [
        sys.executable,
        str(benchlib.BENCH_DIR / "run_pairs.py"),
        "--device",
        "cpu",
        "--dry-run",
        "--pairs",
        "resnet50:resnet50_train",
        "--modes",
        "solo,mps",
        "--window-s",
        "1",
        "--discard-s",
        "0.3",
        "--reps",
        "2",
        "--warmup-s",
        "0.5",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    rows = benchlib.read_jsonl(out / "raw.jsonl")
    check(
        r.returncode == 0 and len(rows) == 4 and all(x["ok"] for x in rows),
        f"run_pairs wrote 4 ok rows (rc {r.returncode}; {r.stdout[-500:]}{r.stderr[-500:]})",
    )
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    check(
        "nothing to do" in r2.stdout and len(benchlib.read_jsonl(out / "raw.jsonl")) == 4,
        "resume skips done rows",
    )
    r3 = subprocess.run(
        [sys.executable, str(benchlib.BENCH_DIR / "summarize.py"), "--dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(r3.returncode == 0, f"summarize ran ({r3.stderr[-300:]})")
    for f in ("summary.json", "corun.json", "report.md", "plots/hp_p50_ratio.png"):
        check((out / f).exists(), f"summarize wrote {f}")
    s = json.loads((out / "summary.json").read_text())
    m = s["pairs"][0]["modes"]
    check(
        "mps" in m and m["mps"]["hp_p50_ratio"] is not None and m["mps"]["lp_vs_mps_ratio"] == 1.0,
        "summary has mps ratios",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--e2e", action="store_true")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fkself"))
    try:
        check_analysis(tmp)
        if a.e2e:
            e2e(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nselfcheck: {len(FAILS)} failure(s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
