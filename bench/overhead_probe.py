#!/usr/bin/env python3
"""Where does libfikit.so's cost on a launch-bound HP come from?

Issue 9's `solo_preload` windows showed GPT-2 b1 1.08-1.44x slower under the library than plain,
while the launch micro-benchmark (bench/launch_loop.c) costs well under a microsecond: the
micro-benchmark keeps its stream busy, so it never takes the measurement gate of an idle stream
(interpose/src/launch.c, "measurement: sampled event pairs"). This probe runs each HP model alone
in interleaved windows under variants that switch one part of the measuring off at a time, so the
figure that moves names the part that costs:

  plain        no library
  preload      the library as shipped (events on 1 launch in FIKIT_SAMPLE, gated on idle streams)
  nogate       FIKIT_GATE=0: sampled events, never gated
  nosample     FIKIT_SAMPLE=1000000: only the first launches of each kernel are timed
  passthrough  FIKIT_PASSTHROUGH=1: counted, never measured nor decided
  profile      FIKIT_PROFILE=1: every kernel timed by CUPTI activity records instead of events
  plain_b      a second plain process, and preload_b a second preload one: each variant is one
  preload_b    long-lived process, so these A/A pairs show how far two identical processes differ,
               the noise floor below which no variant's ratio means anything
  toggle       one preload process that turns the library's measuring off and on every
               --toggle-ms (fikit_set_measuring, between requests): its requests with measuring on
               over those with it off, stretch by stretch in the same process (toggle_on_vs_off),
               free of the process-to-process offset and of slow drifts of the host
  toggle_b     the same with the library of --lib-b: two libraries' costs, each measured inside
               its own process, side by side in one run
  toggle_nogate    toggle with FIKIT_GATE=0, and toggle_nosample with FIKIT_SAMPLE=1000000: what
  toggle_nosample  measuring costs without the gate, and without the samples, each inside its own
               process; their differences from toggle's split its cost into its parts
  toggle_bypass    the whole library off and on instead (fikit_set_bypass: launches go straight to
               the driver, uncounted): everything it costs a launch but the call through it
  toggle_quiet     quiet launches off and on instead (fikit_set_quiet: off, every launch publishes
               its predictions): what quiet launches save, inside one process; needs --in-domain,
               since a client outside a domain never goes quiet

--in-domain puts every preloaded worker in a self-granted domain of its own at high priority (a
quiet-capable HP, as under fikitd), not in none.

Writes DIR/overhead.jsonl (a row per window), DIR/stats/ (each preloaded worker's FIKIT_STATS) and
DIR/overhead.json (per model and variant: p50, p99 and mean request latency, their ratio to plain in
the same repetition, median and spread).

    python3 bench/overhead_probe.py --lib build/gpu/interpose/libfikit.so --out DIR
    python3 bench/overhead_probe.py --device fake --lib build/dev/interpose/libfikit.so --out /tmp/o
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import ctl

VARIANTS: dict[str, dict[str, str] | None] = {
    "plain": None,
    "preload": {},
    "nogate": {"FIKIT_GATE": "0"},
    "nosample": {"FIKIT_SAMPLE": "1000000"},
    "passthrough": {"FIKIT_PASSTHROUGH": "1"},
    "profile": {"FIKIT_PROFILE": "1"},  # every kernel timed by CUPTI (--cupti names the libcupti)
    "plain_b": None,
    "preload_b": {},
    "toggle": {},
    "toggle_b": {},
    "toggle_nogate": {"FIKIT_GATE": "0"},
    "toggle_nosample": {"FIKIT_SAMPLE": "1000000"},
    "toggle_bypass": {},
    "toggle_quiet": {},
}
# the library's measuring (toggle_bypass: all of it) turned off and on inside the process
TOGGLES = ("toggle", "toggle_b", "toggle_nogate", "toggle_nosample", "toggle_bypass", "toggle_quiet")
SWITCHES = {"toggle_bypass": "library", "toggle_quiet": "quiet"}  # the others: measuring


def variant_env(lib: str, extra: dict[str, str] | None, cupti: str = "") -> dict[str, str]:
    env = benchlib.base_env()
    if extra is not None:
        env["LD_PRELOAD"] = lib
        env.update(extra)
        if cupti and "FIKIT_PROFILE" in extra:
            env["FIKIT_CUPTI"] = cupti
    return env


def domain_env(path: Path, lib: str) -> dict[str, str]:
    """A self-granted domain of its own for one worker, joined at high priority (no fikitd)."""
    benchlib.create_domain(path / "gpu0", lib)
    return {"FIKIT_DOMAIN": str(path / "gpu0"), "FIKIT_PRIO": "high",
            "FIKIT_SOCKET": str(path / "no-fikitd.sock")}


def prepare_fake(base: Path) -> None:
    """The fake driver for every worker (a CPU rehearsal: logic, never speed)."""
    import fake_workloads
    import verify_daemon

    os.environ["LD_LIBRARY_PATH"] = str(verify_daemon.build_fake(base / "fc"))
    os.environ["FAKECUDA_DURATIONS"] = fake_workloads.FAKE_DURATIONS
    os.environ["FAKECUDA_TIMELINE"] = str(base / "timeline")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratios to `plain` of the same model and repetition; medians over repetitions."""
    plain = {(r["model"], r["rep"]): r for r in rows if r["variant"] == "plain" and r.get("stats")}
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        per: dict[str, Any] = {}
        for v in VARIANTS:
            rs = [r for r in rows if r["model"] == model and r["variant"] == v and r.get("stats")]
            if not rs:
                continue
            entry: dict[str, Any] = {"reps": len(rs)}
            if v in TOGGLES:  # within the process: on over off, window by window
                for k in ("p50_ms", "p99_ms", "mean_ms"):
                    rr = [benchlib.ratio(r["on"][k], r["off"][k]) for r in rs if r.get("on") and r.get("off")]
                    key = "toggle_on_vs_off_" + k.replace("_ms", "")
                    entry[key] = benchlib.rnd(benchlib.median(rr))
                    entry[key + "_spread"] = [benchlib.rnd(x) for x in (benchlib.spread(rr) or [])] or None
            for k in ("p50_ms", "p99_ms", "mean_ms"):
                entry[k] = benchlib.rnd(benchlib.median(r["stats"][k] for r in rs))
                ratios = [
                    benchlib.ratio(r["stats"][k], plain[(model, r["rep"])]["stats"][k])
                    for r in rs
                    if (model, r["rep"]) in plain
                ]
                key = k.replace("_ms", "_ratio")
                entry[key] = benchlib.rnd(benchlib.median(ratios))
                entry[key + "_spread"] = [benchlib.rnd(x) for x in (benchlib.spread(ratios) or [])] or None
            per[v] = entry
        out[model] = per
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lib", required=True, help="libfikit.so")
    p.add_argument("--lib-b", default="", help="a second libfikit.so, for the toggle_b variant")
    p.add_argument("--out", required=True)
    p.add_argument("--models", default="gpt2,bert,resnet50")
    p.add_argument("--variants", default="plain,preload,nogate,nosample,passthrough")
    p.add_argument("--cupti", default="", help="libcupti for the profile variant (FIKIT_CUPTI)")
    p.add_argument("--device", default="cuda", choices=["cuda", "fake"])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--window-s", type=float, default=2.0)
    p.add_argument("--discard-s", type=float, default=0.3)
    p.add_argument("--cpus", default="2-3", help="every HP worker's CPUs (one runs at a time)")
    p.add_argument("--toggle-ms", type=float, default=100.0, help="the toggle variant's stretch length")
    p.add_argument("--mps-pipe", default="", help="every variant a client of the MPS daemon of this pipe dir")
    p.add_argument("--mps-log", default="", help="its log directory (default: the pipe directory)")
    p.add_argument("--budget-s", type=float, default=240.0, help="start no window after this")
    p.add_argument("--in-domain", action="store_true",
                   help="each preloaded worker in a self-granted domain of its own, at high priority")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        known = ", ".join(VARIANTS)
        print(f"overhead_probe: unknown variant(s) {', '.join(bad)}; known: {known}", file=sys.stderr)
        return 2
    for flag, path in (("--lib", a.lib), ("--lib-b", a.lib_b)):
        if (path or flag == "--lib") and not os.path.isfile(path):
            print(f"overhead_probe: {flag} {path}: no such file", file=sys.stderr)
            return 2
    if "toggle_b" in variants and not a.lib_b:
        print("overhead_probe: the toggle_b variant needs --lib-b", file=sys.stderr)
        return 2
    if "toggle_quiet" in variants and not a.in_domain:
        print("overhead_probe: toggle_quiet needs --in-domain (no client outside a domain is quiet)",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats").mkdir(exist_ok=True)
    sock_dir = Path(tempfile.mkdtemp(prefix="fikit-ovh-"))
    if a.device == "fake":
        prepare_fake(sock_dir)
    workers: dict[tuple[str, str], ctl.WorkerProc] = {}
    # every variant an MPS client of a running server (the HP's condition under fikit), or none
    mps_env: dict[str, str] = {}
    if a.mps_pipe:
        mps_env = {"CUDA_MPS_PIPE_DIRECTORY": a.mps_pipe, "CUDA_MPS_LOG_DIRECTORY": a.mps_log or a.mps_pipe}
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        for v in variants:
            tag = f"{model}-{v}"
            w = ctl.WorkerProc(tag, model, "hp", sock_dir, out / "logs")
            w.spawn(
                ctl.worker_argv(sys.executable, model, a.device, a.device != "cuda", sock_dir / f"{tag}.sock",
                                tag, cpus=a.cpus, toggle_ms=a.toggle_ms if v in TOGGLES else 0.0,
                                toggle_switch=SWITCHES.get(v, "measuring")),
                {**variant_env(a.lib_b if v == "toggle_b" else a.lib, VARIANTS[v], a.cupti), **mps_env,
                 **(domain_env(sock_dir / f"dom-{tag}", a.lib) if a.in_domain and VARIANTS[v] is not None
                    else {}),
                 # what the library counted and measured, written as the worker exits
                 "FIKIT_STATS": str(out / "stats" / f"{tag}.%p.json")},
            )
            workers[(model, v)] = w
    ws = list(workers.values())
    rows: list[dict[str, Any]] = []
    try:
        ctl.connect_and_build(ws, timeout=240)
        ctl.warm_up(ws, 2.0, timeout=120, serial_roles=())
        for w in ws:
            if w.error:
                print(f"  {w.tag}: {w.error[:300]}", flush=True)
        print(f"[overhead] {len(ws)} workers ready in {time.monotonic() - t0:.0f}s", flush=True)
        keys = list(workers)
        for rep in range(a.reps):
            k = rep % len(variants)
            for model in dict.fromkeys(m for m, _ in keys):
                for v in variants[k:] + variants[:k]:  # rotate the order per repetition
                    if time.monotonic() - t0 > a.budget_s:
                        break
                    w = workers[(model, v)]
                    if w.error:
                        continue
                    row: dict[str, Any] = {"model": model, "variant": v, "rep": rep, "stats": None}
                    try:
                        dur = a.discard_s + a.window_s
                        start, recs = ctl.run_window([w], f"{v}-{rep}", dur)
                        t_a, t_b = start + a.discard_s, start + dur
                        row["stats"] = ctl.hp_stats(recs[w.tag], [(t_a, t_b)])
                        if v in TOGGLES:
                            for name, on in (("on", 1), ("off", 0)):
                                part = [r for r in recs[w.tag] if len(r) > 3 and r[3] == on]
                                row[name] = ctl.hp_stats(part, [(t_a, t_b)])
                    except ctl.WorkerError as e:
                        row["error"] = str(e)[:300]
                    rows.append(row)
                    benchlib.append_jsonl(out / "overhead.jsonl", row)
                    st = row["stats"] or {}
                    print(f"  rep{rep} {model:9s} {v:12s} p50 {st.get('p50_ms')} ms "
                          f"p99 {st.get('p99_ms')} ms n={st.get('n')}", flush=True)
    finally:
        ctl.stop_all(ws)
    env = benchlib.env_info(a.device)
    result = {
        "date": env.get("date"),
        "gpu": env.get("gpu"),
        "driver": env.get("driver"),
        "commit": benchlib.git_commit(),
        "variants": {v: VARIANTS[v] for v in variants},
        "lib_b": a.lib_b or None,
        "models": summarize(rows),
    }
    benchlib.write_json(out / "overhead.json", result)
    for model, per in result["models"].items():
        for v, e in per.items():
            print(f"{model:9s} {v:12s} p50 x{e['p50_ratio']} p99 x{e['p99_ratio']} mean x{e['mean_ratio']} "
                  f"(spread p50 {e['p50_ratio_spread']})")
            if "toggle_on_vs_off_p50" in e:
                switch = SWITCHES.get(v, "")
                what = {"library": "the library", "quiet": "quiet launches"}.get(switch, "measuring")
                print(f"{model:9s} {v:12s} {what} on over off in the same process: p50 "
                      f"x{e['toggle_on_vs_off_p50']} {e['toggle_on_vs_off_p50_spread']}, p99 "
                      f"x{e['toggle_on_vs_off_p99']}, mean x{e['toggle_on_vs_off_mean']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
