#!/usr/bin/env python3
"""Turn run_pairs.py's raw.jsonl into summary.json (issue 9), corun.json (issue 11), report.md, plots.

Ratios are computed per repetition against the same repetition's `solo` row (the windows of one
repetition are seconds apart), then the median over repetitions is reported with its spread
[min, max]. `lp_vs_mps_ratio` compares with the same repetition's plain-MPS row. Where a pair ran
`solo_mps` (HP and LP each alone as MPS clients), `hp_p50_vs_solo_mps` / `hp_p99_vs_solo_mps` say how
much of a mode's HP cost is MPS's own rather than fikit's.

Several --dir (each one run, measured side by side within itself) make one table: every ratio stays
within its own folder, and where two folders measured the same mode of a pair the later folder's wins.

    python3 bench/summarize.py --dir bench/results/X [--verify bench/results/X/verify/summary.json]
    python3 bench/summarize.py --dir bench/results/X --dir bench/results/Y --out /tmp/XY
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchlib

RATIO_KEYS = ["hp_p50_ratio", "hp_p99_ratio", "hp_jct_ratio", "lp_tput_ratio", "lp_vs_mps_ratio", "fill"]
SOLO_MPS_KEYS = ["hp_p50_vs_solo_mps", "hp_p99_vs_solo_mps"]  # only where the pair ran solo_mps
MODE_ORDER = [*benchlib.MODES, benchlib.CORUN_MODE]
MODE_ORDER.insert(MODE_ORDER.index("solo_preload") + 1, benchlib.SOLO_MPS_MODE)  # with the other solos
TARGET_HP_P50 = 1.02
TARGET_HP_P99 = 1.05
TARGET_LP_VS_MPS = 0.90
TARGET_PER_LAUNCH_US = 0.5
TARGET_RESNET_RATIO = 1.02


def mode_key(m: str) -> tuple[int, str]:
    base = m
    for prefix in ("mps_prio_smcap", "fikit_corun"):
        if m.startswith(prefix):
            base = prefix
    return (MODE_ORDER.index(base) if base in MODE_ORDER else 99, m)


def is_corun(mode: str) -> bool:
    return mode.startswith("fikit_corun")


def corun_variant(mode: str) -> str:
    """fikit_corun70 -> corun70 (corun.json's variant names)."""
    return "corun" + mode[len("fikit_corun") :]


def pct_variant(pct: Any) -> str:
    """A corun_sm_pct setting as corun.json names it: 0 gapfill, "auto" auto, NN corunNN."""
    if pct == "auto":
        return "auto"
    return "gapfill" if not pct else f"corun{int(pct)}"


def default_variant() -> tuple[str, str]:
    """The variant fikit runs when nothing is configured: fikitd's default [scheduler]
    corun_sm_pct; (name, where that came from)."""
    try:
        pct = benchlib.fikitd_default_share()
    except Exception as e:  # no fikitd beside this checkout: say so rather than guess silently
        return "gapfill", f"fikitd.config not importable ({e!r}): assumed corun_sm_pct = 0"
    return pct_variant(pct), f"fikitd.config.SchedulerConfig().corun_sm_pct = {pct!r}"


def variant_misses(v: dict[str, Any]) -> list[str]:
    """Issue 11's targets for one variant, each miss with the measured figure."""
    out = []
    p50, p99, lp = v.get("hp_p50_ratio"), v.get("hp_p99_ratio"), v.get("lp_vs_mps_ratio")
    if p50 is None or p50 > TARGET_HP_P50:
        out.append(f"HP p50 {p50} x solo (target <= {TARGET_HP_P50}; spread {v.get('hp_p50_ratio_spread')})")
    if p99 is None or p99 > TARGET_HP_P99:
        out.append(f"HP p99 {p99} x solo (target <= {TARGET_HP_P99}; spread {v.get('hp_p99_ratio_spread')})")
    if lp is None or lp < TARGET_LP_VS_MPS:
        out.append(
            f"LP {lp} x plain MPS (target >= {TARGET_LP_VS_MPS}; spread {v.get('lp_vs_mps_ratio_spread')})"
        )
    return out


def lp_its(row: dict[str, Any]) -> list[float | None]:
    return [s.get("its") for s in (row.get("lp_stats") or [])]


def mean_ratio(num: list[float | None], den: list[float | None]) -> float | None:
    rs = [benchlib.ratio(a, b) for a, b in zip(num, den, strict=False)]
    rs2 = [r for r in rs if r is not None]
    if not rs2 or len(rs2) != len(rs):
        return None
    return sum(rs2) / len(rs2)


def pair_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: per-repetition ratios, their medians and spreads, plus absolute medians."""
    ok = [r for r in rows if r.get("ok")]
    by_rep_mode: dict[tuple[int, str], dict[str, Any]] = {}
    for r in ok:
        by_rep_mode[(int(r["rep"]), str(r["mode"]))] = r  # a later line for the same key wins
    solos = [r for (_, m), r in by_rep_mode.items() if m == "solo"]
    mpss = [r for (_, m), r in by_rep_mode.items() if m == "mps"]
    solo_mpss = [r for (_, m), r in by_rep_mode.items() if m == benchlib.SOLO_MPS_MODE]

    def pooled(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not rs:
            return None
        n_lp = max(len(lp_its(r)) for r in rs)
        return {
            "hp_stats": {
                k: benchlib.median((r.get("hp_stats") or {}).get(k) for r in rs)
                for k in ("p50_ms", "p99_ms", "mean_ms")
            },
            "lp_stats": [
                {"its": benchlib.median(lp_its(r)[i] if i < len(lp_its(r)) else None for r in rs)}
                for i in range(n_lp)
            ],
        }

    solo_pool = pooled(solos)
    mps_pool = pooled(mpss)
    solo_mps_pool = pooled(solo_mpss)
    modes: dict[str, Any] = {}
    per_mode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (rep, mode), r in sorted(by_rep_mode.items()):
        solo = by_rep_mode.get((rep, "solo")) or solo_pool
        mps = by_rep_mode.get((rep, "mps")) or mps_pool
        hs = r.get("hp_stats") or {}
        sh = (solo or {}).get("hp_stats") or {}
        vals = {
            "hp_p50_ratio": benchlib.ratio(hs.get("p50_ms"), sh.get("p50_ms")),
            "hp_p99_ratio": benchlib.ratio(hs.get("p99_ms"), sh.get("p99_ms")),
            "hp_jct_ratio": benchlib.ratio(hs.get("mean_ms"), sh.get("mean_ms")),
            "lp_tput_ratio": mean_ratio(lp_its(r), lp_its(solo)) if solo else None,
            "lp_vs_mps_ratio": mean_ratio(lp_its(r), lp_its(mps)) if mps else None,
            "fill": (r.get("fill") or {}).get("fill") if isinstance(r.get("fill"), dict) else None,
            "hp_p50_ms": hs.get("p50_ms"),
            "hp_p99_ms": hs.get("p99_ms"),
            "hp_mean_ms": hs.get("mean_ms"),
            "lp_its": sum(x for x in lp_its(r) if x) if lp_its(r) else None,
            "solo_same_rep": (rep, "solo") in by_rep_mode,
        }
        if solo_mps_pool:
            smh = (by_rep_mode.get((rep, benchlib.SOLO_MPS_MODE)) or solo_mps_pool).get("hp_stats") or {}
            vals["hp_p50_vs_solo_mps"] = benchlib.ratio(hs.get("p50_ms"), smh.get("p50_ms"))
            vals["hp_p99_vs_solo_mps"] = benchlib.ratio(hs.get("p99_ms"), smh.get("p99_ms"))
        per_mode[mode].append(vals)
    for mode, vs in per_mode.items():
        m: dict[str, Any] = {}
        for k in RATIO_KEYS + (SOLO_MPS_KEYS if solo_mps_pool else []):
            xs = [v[k] for v in vs]
            m[k] = benchlib.rnd(benchlib.median(xs))
            m[k + "_spread"] = [benchlib.rnd(x) for x in (benchlib.spread(xs) or [])] or None
        for k in ("hp_p50_ms", "hp_p99_ms", "hp_mean_ms", "lp_its"):
            m[k] = benchlib.rnd(benchlib.median(v[k] for v in vs))
        m["reps"] = len(vs)
        m["solo_fallback"] = not all(v["solo_same_rep"] for v in vs)
        modes[mode] = m
    # paper-style figures, per repetition then median: HP speed-up of fikit over plain sharing
    for mode in [m for m in per_mode if m == "fikit" or is_corun(m)]:
        for base in ("mps", "timeslice"):
            sp = []
            for (rep, md), r in by_rep_mode.items():
                if md != mode or (rep, base) not in by_rep_mode:
                    continue
                sp.append(
                    benchlib.ratio(
                        (by_rep_mode[(rep, base)].get("hp_stats") or {}).get("mean_ms"),
                        (r.get("hp_stats") or {}).get("mean_ms"),
                    )
                )
            modes[mode][f"hp_speedup_vs_{base}"] = benchlib.rnd(benchlib.median(sp))
            modes[mode][f"hp_speedup_vs_{base}_spread"] = [
                benchlib.rnd(x) for x in (benchlib.spread(sp) or [])
            ]
            lj = []
            for (rep, md), r in by_rep_mode.items():
                if md != mode or (rep, base) not in by_rep_mode:
                    continue
                lj.append(mean_ratio(lp_its(r), lp_its(by_rep_mode[(rep, base)])))
            modes[mode][f"lp_jct_ratio_vs_{base}"] = benchlib.rnd(benchlib.median(lj))
    errors = [
        {"mode": r.get("mode"), "rep": r.get("rep"), "error": str(r.get("error"))[:300]}
        for r in rows
        if not r.get("ok")
    ]
    return {"modes": dict(sorted(modes.items(), key=lambda kv: mode_key(kv[0]))), "errors": errors}


def find_verify(d: Path, explicit: str | None) -> dict[str, Any] | None:
    cands = (
        [Path(explicit)]
        if explicit
        else [d / "verify" / "summary.json", d.parent / "verify" / "summary.json"]
    )
    for c in cands:
        try:
            return json.loads(c.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return None


def env_of(d: Path) -> dict[str, Any]:
    envs = benchlib.read_jsonl(d / "env.jsonl")
    if not envs:
        return {"date": None, "gpu": None, "driver": None, "commit": None}
    first, last = envs[0], envs[-1]
    commits = sorted({str(e.get("commit")) for e in envs})
    return {
        "date": last.get("date"),
        "first_date": first.get("date"),
        "gpu": last.get("gpu"),
        "driver": last.get("driver"),
        "commit": last.get("commit"),
        "commits": commits if len(commits) > 1 else None,
        "via": sorted({str(e.get("via")) for e in envs}),
    }


def misses(summary: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for p in summary["pairs"]:
        name = f"{p['hp']} + {p['lp']}"
        modes = p["modes"]
        for fm in ("fikit",):
            f = modes.get(fm)
            if f is None:
                out.append(f"{name}: no `{fm}` result (see errors)")
                continue
            if f["hp_p50_ratio"] is None or f["hp_p50_ratio"] > TARGET_HP_P50:
                out.append(
                    f"{name}: {fm} HP p50 = {f['hp_p50_ratio']} x solo (target <= {TARGET_HP_P50}; "
                    f"spread {f.get('hp_p50_ratio_spread')})"
                )
            if f["hp_p99_ratio"] is None or f["hp_p99_ratio"] > TARGET_HP_P99:
                out.append(
                    f"{name}: {fm} HP p99 = {f['hp_p99_ratio']} x solo (target <= {TARGET_HP_P99}; "
                    f"spread {f.get('hp_p99_ratio_spread')})"
                )
            if f["lp_vs_mps_ratio"] is None or f["lp_vs_mps_ratio"] < TARGET_LP_VS_MPS:
                out.append(
                    f"{name}: {fm} LP = {f['lp_vs_mps_ratio']} x plain-MPS throughput "
                    f"(target >= {TARGET_LP_VS_MPS}; spread {f.get('lp_vs_mps_ratio_spread')})"
                )
            mp = modes.get("mps_prio")
            if mp is not None:
                if (
                    f["hp_p99_ratio"] is None
                    or mp["hp_p99_ratio"] is None
                    or f["hp_p99_ratio"] >= mp["hp_p99_ratio"]
                ):
                    out.append(
                        f"{name}: {fm} HP p99 = {f['hp_p99_ratio']} x solo is not below "
                        "MPS client priority's "
                        f"{mp['hp_p99_ratio']}"
                    )
            else:
                out.append(f"{name}: no `mps_prio` result to compare fikit's HP p99 with")
    ov = summary.get("overhead") or {}
    pl = ov.get("per_launch_us")
    if pl is None:
        out.append("overhead: no per-launch figure (run verify_interpose.py)")
    elif pl > TARGET_PER_LAUNCH_US:
        out.append(f"overhead: {pl} us added per launch in pass-through (target <= {TARGET_PER_LAUNCH_US})")
    rr = ov.get("resnet50_b1_ratio")
    if rr is None:
        out.append("overhead: no solo ResNet-50 b1 ratio (run verify_interpose.py)")
    elif rr > TARGET_RESNET_RATIO:
        out.append(
            f"overhead: solo ResNet-50 b1 under libfikit.so = {rr} x (target <= {TARGET_RESNET_RATIO})"
        )
    # The library measures by default: its per-launch cost is the one users pay, not pass-through's.
    pn = ov.get("per_launch_us_normal")
    if pn is not None and pn > TARGET_PER_LAUNCH_US:
        out.append(f"overhead: {pn} us added per launch in the default (measuring) mode "
                   f"(target <= {TARGET_PER_LAUNCH_US})")
    for pair, r in sorted((ov.get("solo_preload_hp_p50_ratio") or {}).items()):
        if r is not None and r > TARGET_RESNET_RATIO:
            out.append(f"overhead: {pair}: HP alone under libfikit.so, p50 = {r} x plain "
                       f"(the {TARGET_RESNET_RATIO} bound of ResNet-50 b1)")
    return out


def mechanisms(path: Path) -> dict[str, Any]:
    """Issue 11's candidate mechanisms, measured on a synthetic HP/LP pair (bench/corun_mech.py):
    the same ratio keys as the pairs' variants, so one file answers which mechanism was tried."""
    m = json.loads(path.read_text(encoding="utf-8"))
    variants = m.get("variants") or {}
    keep = ("hp_p50_ratio", "hp_p99_ratio", "lp_vs_mps_ratio", "lp_tput_ratio", "hp_p50_ratio_spread",
            "hp_p99_ratio_spread", "lp_vs_mps_ratio_spread", "lp_sms_got", "reps", "errors")
    # the kernels' lengths as measured alone, not as the probe meant them to be
    hp_us = (variants.get("hp_alone") or {}).get("hp_kernel_ev_us")
    lp_us = (variants.get("lp_alone") or {}).get("lp_kernel_us")
    return {
        "source": str(path),
        "commit": m.get("commit"),
        "date": m.get("date"),
        "what": f"synthetic MPS clients: HP = requests of short kernels ({fmt(hp_us, 1)} us alone) with "
        f"host gaps; LP = back-to-back memory-streaming kernels ({fmt(lp_us, 0)} us alone)",
        "variants": {name: {k: v.get(k) for k in keep if k in v} for name, v in variants.items()},
    }


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def fmt_sp(m: dict[str, Any], k: str) -> str:
    sp = m.get(k + "_spread")
    v = fmt(m.get(k))
    if not sp:
        return v
    return f"{v} [{fmt(sp[0])}–{fmt(sp[1])}]"


def report_md(
    summary: dict[str, Any],
    miss: list[str],
    raw_count: int,
    meta: list[dict[str, Any]],
    corun: dict[str, Any] | None = None,
) -> str:
    L: list[str] = []
    L.append(f"# fikit on {summary.get('gpu')}: HP/LP pairs side by side")
    L.append("")
    if miss:
        L.append(f"**Targets missed ({len(miss)}):**")
        L.append("")
        for m in miss:
            L.append(f"- {m}")
    else:
        L.append(
            "**Every target met** (fikit HP p50 <= 1.02 and p99 <= 1.05 of solo, LP >= 0.90 of plain MPS, "
        )
        L.append("HP p99 below MPS client priority, overhead <= 0.5 us/launch and <= 2% on ResNet-50 b1).")
    L.append("")
    srcs = summary.get("sources")
    commits = (summary.get("commits") or []) if srcs else []
    commit = f"commit `{summary.get('commit')}`"
    if len(commits) > 1:  # a merged table's, every run's
        commit = "commits " + ", ".join(f"`{c}`" for c in commits)
    L.append(
        f"Date {summary.get('date')}, GPU {summary.get('gpu')}, driver {summary.get('driver')}, "
        f"{commit}; {raw_count} raw rows; ratios are medians over interleaved "
        "repetitions of per-repetition ratios against the same repetition's solo windows, [min–max] over "
        "repetitions."
    )
    L.append("")
    if srcs:
        L.append(
            f"Assembled from {len(srcs)} result folders, each measured side by side within its own run: "
            "every ratio is against its own folder's solo and MPS rows, and where two folders measured "
            "the same mode of a pair the later folder's is shown (column `source`)."
        )
        L.append("")
        for src in srcs:
            c = ", ".join(f"`{x}`" for x in src.get("commits") or [src.get("commit")])
            L.append(f"- `{src['dir']}`: {src.get('date')}, {src.get('gpu')}, driver {src.get('driver')}, "
                     f"commit {c}")
        L.append("")
    L.append("## Paper-style table")
    L.append("")
    L.append(
        "HP speed-up = HP mean request latency under plain sharing / under fikit. "
        "LP JCT ratio = LP JCT under plain sharing / under fikit "
        "(= fikit LP throughput / sharing LP throughput; the paper reports 0.86–1)."
    )
    L.append("")
    L.append(
        "| HP | LP | speed-up vs MPS | speed-up vs time-slicing | LP JCT ratio vs MPS | LP JCT ratio vs "
        "time-slicing | fikit HP p50 / solo | fikit HP p99 / solo |"
    )
    L.append("|---|---|---|---|---|---|---|---|")
    for p in summary["pairs"]:
        f = p["modes"].get("fikit") or {}
        L.append(
            f"| {p['hp']} | {p['lp']} | {fmt(f.get('hp_speedup_vs_mps'))} "
            f"| {fmt(f.get('hp_speedup_vs_timeslice'))} "
            f"| {fmt(f.get('lp_jct_ratio_vs_mps'))} | {fmt(f.get('lp_jct_ratio_vs_timeslice'))} "
            f"| {fmt(f.get('hp_p50_ratio'), 3)} | {fmt(f.get('hp_p99_ratio'), 3)} |"
        )
    L.append("")
    L.append("## Every mode")
    for p in summary["pairs"]:
        L.append("")
        L.append(f"### {p['hp']} + {p['lp']}")
        L.append("")
        # optional columns only where some mode has them: solo_mps ran, or folders were merged
        solo_mps = any(k in m for m in p["modes"].values() for k in SOLO_MPS_KEYS)
        source = any("source" in m for m in p["modes"].values())
        head = ["mode", "HP p50 / solo", "HP p99 / solo"]
        head += ["HP p50 / solo MPS", "HP p99 / solo MPS"] if solo_mps else []
        head += ["HP mean / solo", "LP / solo", "LP / MPS", "fill", "HP p50 ms", "reps"]
        head += ["source"] if source else []
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for mode, m in p["modes"].items():
            cells = [mode, fmt_sp(m, "hp_p50_ratio"), fmt_sp(m, "hp_p99_ratio")]
            cells += [fmt_sp(m, k) for k in SOLO_MPS_KEYS] if solo_mps else []
            cells += [
                fmt_sp(m, "hp_jct_ratio"),
                fmt_sp(m, "lp_tput_ratio"),
                fmt_sp(m, "lp_vs_mps_ratio"),
                fmt(m.get("fill")),
                fmt(m.get("hp_p50_ms"), 3),
                str(m.get("reps")),
            ]
            cells += [fmt(m.get("source"))] if source else []
            L.append("| " + " | ".join(cells) + " |")
        if p.get("errors"):
            L.append("")
            L.append(f"Failed rows ({len(p['errors'])}):")
            for e in p["errors"][:8]:
                where = f" ({e['source']})" if e.get("source") else ""
                L.append(f"- {e['mode']} rep {e['rep']}{where}: `{e['error'][:200]}`")
    ov = summary.get("overhead") or {}
    L.append("")
    if corun and any(len(p["variants"]) > 2 for p in corun["pairs"]):
        L.append("## Co-running variants (issue 11, `corun.json`)")
        L.append("")
        L.append(
            f"fikit's default variant: `{corun.get('default')}` ({corun.get('default_source')}). "
            "`gapfill` = fikit without co-running; `corunNN` = LP launches that fit no gap run beside busy "
            "HP "
            "on a green context of NN% of the SMs; `mps_prio_smcap` = the best fixed MPS SM cap measured."
        )
        L.append("")
        L.append("| HP | LP | variant | HP p50 / solo | HP p99 / solo | LP / MPS | targets |")
        L.append("|---|---|---|---|---|---|---|")
        for pc in corun["pairs"]:
            for name, v in pc["variants"].items():
                label = name + (f" ({v['mode']})" if v.get("mode") else "")
                tgt = "; ".join(pc.get("targets_missed", {}).get(name, [])) or (
                    "met" if name in ("gapfill", "strict", "auto") or name.startswith("corun") else ""
                )
                L.append(
                    f"| {pc['hp']} | {pc['lp']} | {label} | {fmt_sp(v, 'hp_p50_ratio')} "
                    f"| {fmt_sp(v, 'hp_p99_ratio')} | {fmt_sp(v, 'lp_vs_mps_ratio')} | {tgt} |"
                )
        L.append("")
    L.append("## Overhead")
    L.append("")
    L.append(
        f"- added host time per launch, pass-through: {fmt(ov.get('per_launch_us'), 3)} us; "
        f"normal (measuring) mode: {fmt(ov.get('per_launch_us_normal'), 3)} us"
    )
    L.append(
        "- solo eager ResNet-50 b1 latency under libfikit.so: "
        f"normal {fmt(ov.get('resnet50_b1_ratio'), 3)} x, "
        f"pass-through {fmt(ov.get('resnet50_b1_ratio_passthrough'), 3)} x"
    )
    cores = next((m.get("cores") for m in meta if m.get("cores")), None)
    if cores:
        L.append("")
        L.append(f"HP workers pinned to CPUs [{cores.get('hp')}], LP workers to [{cores.get('lp')}].")
    via = summary.get("via")
    if via:
        L.append(f"fikit modes ran via: {', '.join(via)}.")
    notes = (corun or {}).get("notes")
    if notes:
        L.append("")
        L.append("## Where the time went")
        L.append("")
        L.extend(f"- {n}" for n in notes)
    mech = (corun or {}).get("mechanisms")
    if mech:
        L.append("")
        L.append(f"## Co-running mechanisms (issue 11), {mech['what']}")
        L.append("")
        L.append(f"From `{mech['source']}` (commit `{mech.get('commit')}`); medians [min–max] over "
                 "interleaved repetitions, HP against HP alone, LP against plain MPS.")
        L.append("")
        L.append("| variant | HP p50 / alone | HP p99 / alone | LP / plain MPS | LP SMs | reps |")
        L.append("|---|---|---|---|---|---|")
        for name, v in mech["variants"].items():
            sms = ", ".join(map(str, v.get("lp_sms_got") or [])) or "–"
            L.append(f"| {name} | {fmt_sp(v, 'hp_p50_ratio')} | {fmt_sp(v, 'hp_p99_ratio')} | "
                     f"{fmt_sp(v, 'lp_vs_mps_ratio')} | {sms} | {fmt(v.get('reps'))} |")
    L.append("")
    if srcs:
        L.append("Plots: `plots/*.png`. Raw rows and per-pair worker details: each source folder's "
                 "`raw.jsonl` and `pairs_meta.jsonl`.")
    else:
        L.append("Plots: `plots/*.png`. Raw rows: `raw.jsonl`; per-pair worker details: `pairs_meta.jsonl`.")
    return "\n".join(L) + "\n"


def plots(summary: dict[str, Any], outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        print(f"summarize: no plots ({e!r})", file=sys.stderr)
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    pairs = summary["pairs"]
    all_modes = sorted({m for p in pairs for m in p["modes"]}, key=mode_key)
    targets = {
        "hp_p50_ratio": TARGET_HP_P50,
        "hp_p99_ratio": TARGET_HP_P99,
        "lp_vs_mps_ratio": TARGET_LP_VS_MPS,
    }
    for key in ("hp_p50_ratio", "hp_p99_ratio", "hp_jct_ratio", "lp_tput_ratio", "lp_vs_mps_ratio"):
        modes = [m for m in all_modes if any((p["modes"].get(m) or {}).get(key) is not None for p in pairs)]
        if not modes:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(pairs) + 2), 4.5))
        width = 0.8 / len(modes)
        for i, mode in enumerate(modes):
            xs, ys, lo, hi = [], [], [], []
            for j, p in enumerate(pairs):
                m = p["modes"].get(mode) or {}
                v = m.get(key)
                if v is None:
                    continue
                sp = m.get(key + "_spread") or [v, v]
                xs.append(j + (i - (len(modes) - 1) / 2) * width)
                ys.append(v)
                lo.append(max(0.0, v - sp[0]))
                hi.append(max(0.0, sp[1] - v))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=mode)
        if key in targets:
            ax.axhline(targets[key], color="k", linestyle="--", linewidth=1, label=f"target {targets[key]}")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels([f"{p['hp']}\n{p['lp']}" for p in pairs], fontsize=7)
        ax.set_ylabel(key)
        ax.set_title(f"{key} per pair and mode (median, bars: min–max over repetitions)", fontsize=9)
        ax.legend(fontsize=7, ncol=3)
        if key.startswith("hp"):
            ax.set_yscale("log")
        fig.tight_layout()
        path = outdir / f"{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(str(path))
    return made


def pair_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One folder's pairs, in the order they first ran, each with its own pair_table."""
    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: list[str] = []
    for r in rows:
        if r["pair"] not in by_pair:
            order.append(r["pair"])
        by_pair[r["pair"]].append(r)
    entries = []
    for spec in order:
        rs = by_pair[spec]
        t = pair_table(rs)
        first = rs[0]
        lp = "+".join(
            f"{m}{'' if pr == 'low' else '@' + pr}"
            for m, pr in zip(first.get("lps", []), first.get("lp_prios", []), strict=False)
        )
        hp = first["hp"] + (f"%{first['hp_rate']:g}" if first.get("hp_rate") else "")
        entry: dict[str, Any] = {"pair": spec, "hp": hp, "lp": lp, "modes": t["modes"]}
        if t["errors"]:
            entry["errors"] = t["errors"]
        entries.append(entry)
    return entries


def merge_pairs(folders: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """(folder name, its pair_entries), in the order given -> one list of pairs. Whole mode entries
    are taken, never recomputed, so each ratio stays against its own folder's solo/MPS rows (rows
    of different runs are not side by side); a later folder's mode replaces an earlier one's."""
    merged: dict[str, dict[str, Any]] = {}
    for name, entries in folders:
        for e in entries:
            m = merged.setdefault(e["pair"], {"pair": e["pair"], "hp": e["hp"], "lp": e["lp"], "modes": {}})
            for mode, v in e["modes"].items():
                m["modes"][mode] = {**v, "source": name}
            for err in e.get("errors", []):
                m.setdefault("errors", []).append({**err, "source": name})
    for m in merged.values():
        m["modes"] = dict(sorted(m["modes"].items(), key=lambda kv: mode_key(kv[0])))
    return list(merged.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--dir",
        required=True,
        action="append",
        help="run_pairs.py --out directory (raw.jsonl); again to merge several runs (later wins)",
    )
    p.add_argument("--out", default=None, help="where to write (default: --dir; required with several)")
    p.add_argument("--verify", default=None, help="verify_interpose.py summary.json (default: DIR/verify/)")
    p.add_argument(
        "--default-variant",
        default=None,
        help="corun.json 'default': the variant fikit uses (default: from fikitd's [scheduler] corun_sm_pct)",
    )
    p.add_argument(
        "--mech",
        default=None,
        help="bench/corun_mech.py's mech.json: its variants go into corun.json as `mechanisms`",
    )
    p.add_argument(
        "--note",
        action="append",
        default=[],
        help="a finding for corun.json's `notes` and report.md (where the time went); repeatable",
    )
    args = p.parse_args(argv)
    dirs = [Path(x) for x in args.dir]
    names = [d.resolve().name for d in dirs]
    if len(dirs) > 1 and not args.out:
        p.error("several --dir need --out: a merged summary belongs to none of them")
    if len(set(names)) < len(names):
        p.error(f"--dir names must differ (each mode's `source` is its folder's name): {names}")
    out = Path(args.out) if args.out else dirs[0]
    rows_of: dict[str, list[dict[str, Any]]] = {}
    for name, d in zip(names, dirs, strict=True):
        rows_of[name] = benchlib.read_jsonl(d / "raw.jsonl")
        if not rows_of[name]:
            print(f"summarize: no rows in {d / 'raw.jsonl'}", file=sys.stderr)
            return 2
    rows = [r for rs in rows_of.values() for r in rs]
    meta = [m for d in dirs for m in benchlib.read_jsonl(d / "pairs_meta.jsonl")]
    envs = [env_of(d) for d in dirs]
    env = envs[-1]
    summary: dict[str, Any] = {
        "date": env.get("date"),
        "gpu": env.get("gpu"),
        "driver": env.get("driver"),
        "commit": env.get("commit"),
        "pairs": [],
        "overhead": {},
    }
    if len(dirs) == 1:
        if env.get("commits"):
            summary["commits"] = env["commits"]
        summary["via"] = env.get("via")
        summary["pairs"] = pair_entries(rows)
    else:
        commits = (c for e in envs for c in e.get("commits") or [e.get("commit")])
        summary["commits"] = list(dict.fromkeys(commits))  # distinct, in the order the folders were given
        summary["via"] = sorted({v for e in envs for v in e.get("via") or []})
        summary["sources"] = [
            {"dir": name, **{k: e.get(k) for k in ("date", "gpu", "driver", "commit")}}
            | ({"commits": e["commits"]} if e.get("commits") else {})
            for name, e in zip(names, envs, strict=True)
        ]
        summary["pairs"] = merge_pairs([(name, pair_entries(rows_of[name])) for name in names])
    ver = next((v for d in reversed(dirs) if (v := find_verify(d, args.verify))), None)
    if ver:
        ov = ver.get("overhead") or {}
        summary["overhead"] = {
            k: ov.get(k)
            for k in (
                "per_launch_us",
                "per_launch_us_normal",
                "resnet50_b1_ratio",
                "resnet50_b1_ratio_passthrough",
            )
        }
        summary["overhead"]["source"] = "verify_interpose.py " + str(ver.get("date"))
    else:
        summary["overhead"] = {"per_launch_us": None, "resnet50_b1_ratio": None, "source": None}
    # solo_preload per pair is the library's cost on whole programs: keep it beside the micro figures
    summary["overhead"]["solo_preload_hp_p50_ratio"] = {
        p["pair"]: (p["modes"].get("solo_preload") or {}).get("hp_p50_ratio") for p in summary["pairs"]
    }
    miss = misses(summary)
    summary["targets_missed"] = miss
    benchlib.write_json(out / "summary.json", summary)

    corun: dict[str, Any] = {k: summary[k] for k in ("date", "gpu", "driver", "commit")}
    if "sources" in summary:
        corun["sources"] = summary["sources"]
    corun["pairs"] = []
    for pe in summary["pairs"]:
        modes = pe["modes"]
        variants: dict[str, Any] = {}

        def pick(m: dict[str, Any]) -> dict[str, Any]:
            return {
                k: m.get(k)
                for k in (
                    "hp_p50_ratio",
                    "hp_p99_ratio",
                    "lp_vs_mps_ratio",
                    "hp_p50_ratio_spread",
                    "hp_p99_ratio_spread",
                    "lp_vs_mps_ratio_spread",
                )
            } | ({"source": m["source"]} if "source" in m else {})

        # `fikit` ran fikitd's configuration of the day: its rows say which share it had (the rows
        # of the folder its figures came from first: another run may have had another default)
        fikit_rows = [*rows_of.get((modes.get("fikit") or {}).get("source") or "", []), *rows]
        fikit_pct = next((r.get("corun_sm_pct") for r in fikit_rows
                          if r.get("mode") == "fikit" and r.get("pair") == pe["pair"]), 0)
        for name, mode in (
            ("mps", "mps"),
            ("mps_prio", "mps_prio"),
            (pct_variant(fikit_pct), "fikit"),
            ("gapfill", "fikit_gapfill"),
            ("strict", "fikit_strict"),
        ):
            if mode in modes:
                variants[name] = pick(modes[mode])
        for mode in [m for m in modes if is_corun(m)]:
            variants[corun_variant(mode)] = pick(modes[mode])
        caps = {m: v for m, v in modes.items() if m.startswith("mps_prio_smcap")}
        if caps:
            # the best fixed cap: HP targets met first, then the most LP throughput; else the lowest HP p99
            def score(kv: tuple[str, dict[str, Any]]) -> tuple[int, float]:
                v = kv[1]
                meets = (v.get("hp_p50_ratio") or 9) <= TARGET_HP_P50 and (
                    v.get("hp_p99_ratio") or 9
                ) <= TARGET_HP_P99
                return (0, -(v.get("lp_vs_mps_ratio") or 0)) if meets else (1, v.get("hp_p99_ratio") or 9)

            best_mode, best = sorted(caps.items(), key=score)[0]
            variants["mps_prio_smcap"] = pick(best)
            variants["mps_prio_smcap"]["mode"] = best_mode
        missed = {
            name: ms
            for name, v in variants.items()
            if (name in ("gapfill", "strict", "auto") or name.startswith("corun"))
            and (ms := variant_misses(v))
        }
        corun["pairs"].append(
            {"hp": pe["hp"], "lp": pe["lp"], "variants": variants, "targets_missed": missed}
        )
    dflt, dflt_src = default_variant()
    corun["default"] = args.default_variant or dflt
    corun["default_source"] = "--default-variant" if args.default_variant else dflt_src
    if args.mech:
        corun["mechanisms"] = mechanisms(Path(args.mech))
    if args.note:
        corun["notes"] = list(args.note)
    benchlib.write_json(out / "corun.json", corun)

    (out / "report.md").write_text(report_md(summary, miss, len(rows), meta, corun), encoding="utf-8")
    made = plots(summary, out / "plots")
    print(
        f"summarize: {len(summary['pairs'])} pairs, {len(rows)} rows"
        + (f" from {len(dirs)} folders" if len(dirs) > 1 else "")
        + f" -> {out / 'summary.json'}, "
        "corun.json, report.md, "
        f"{len(made)} plots"
    )
    for m in miss:
        print(f"  MISSED: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
