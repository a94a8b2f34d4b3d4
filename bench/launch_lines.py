#!/usr/bin/env python3
"""How many cache lines of its own state does libfikit.so miss on a launch?

On the GPU hosts the library's cost inside a real program (1-2% of a batch-1 model's request time)
is several times what the same code costs in a tight launch loop, where its state stays cached;
the guests have no PMU to count the misses.  This counts them with cachegrind instead, on the
fake driver: bench/launch_loop.c launches kernels of SHAPES ids in turn, TOUCH_KB apart (writing that many KB
between launches evicts everything, as a real program's own work does), with the library
preloaded as the only client of a self-granting domain (an HP, as in issue 8), and cachegrind's
last-level cache shrunk below TOUCH_KB so that each line the library touches is counted once a
launch.  It prints, per launch, the instructions and the lines missed in each function of
interpose/src, and their total: a deterministic figure to compare two libraries by, where the
GPU hosts' timings need many generations of processes to resolve a 1% change.  With --by-line it
also names the source lines that miss, the places a cut has to reach.

    python3 bench/launch_lines.py --src . [--src OLD_CHECKOUT ...] [--lib LIB ...] [--by-line] [--json]

--src builds a checkout's library with debug information (cachegrind names a function's file
only then); a --lib must have been built so (-DCMAKE_C_FLAGS=-g).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
import verify_daemon

_COUNT = re.compile(r"\s*(\.|[\d,]+ \(\s*[\d.]+%\)|[\d,]+)")
EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def leading_counts(line: str, n: int) -> tuple[list[int | None], str] | None:
    """The n counts a cg_annotate line starts with (None for "."), and the text after them; None
    when it does not start with n counts (a header, a rule)."""
    pos, vals = 0, []
    for _ in range(n):
        m = _COUNT.match(line, pos)
        if not m:
            return None
        tok = m.group(1)
        vals.append(None if tok == "." else int(tok.split()[0].replace(",", "")))
        pos = m.end()
    return vals, line[pos:].strip()


def parse_functions(annotated: str) -> dict[str, dict[str, int]]:
    """cg_annotate's per-function table: {"file:function": {event: count}} for interpose/src."""
    out: dict[str, dict[str, int]] = {}
    for line in annotated.splitlines():
        got = leading_counts(line, len(EVENTS))
        if got is None:
            continue
        vals, name = got
        if "interpose/src/" in name and ":" in name and " " not in name:
            out[name.split("interpose/src/", 1)[1]] = {e: v or 0 for e, v in zip(EVENTS, vals, strict=True)}
    return out


_LINE_MARK = re.compile(r"-- line (\d+) -+$")
_SOURCE_MARK = re.compile(r"-- (?:Auto|User)-annotated source: (.+)$")


def parse_source_lines(annotated: str, events: tuple[str, ...]) -> list[dict[str, Any]]:
    """cg_annotate's annotated sources, for interpose/src: one row per source line that has counts,
    {"where": "file.c:N", "code": its text, event: count, ...}.  cg_annotate prints a file's lines
    in runs, each run after a "-- line N --" mark (the first from line 1), between two rules."""
    rows: list[dict[str, Any]] = []
    src: str | None = None
    lineno, marked = 1, False
    for line in annotated.splitlines():
        m = _SOURCE_MARK.match(line)
        if m:
            path = m.group(1).strip()
            src = path.split("interpose/src/", 1)[1] if "interpose/src/" in path else None
            lineno, marked = 1, True
            continue
        if line.startswith("---"):  # a rule: the one under a file's name, or the end of its section
            src, marked = (src if marked else None), False
            continue
        m = _LINE_MARK.match(line)
        if m:
            lineno = int(m.group(1))
            continue
        if src is None or line.startswith("--") or not line.strip():
            continue
        got = leading_counts(line, len(events))
        if got is None:
            continue  # a header line of the section
        vals, code = got
        if any(v is not None for v in vals):
            rows.append({"where": f"{src}:{lineno}", "code": code,
                         **{e: v or 0 for e, v in zip(events, vals, strict=True)}})
        lineno += 1
    return rows


def hp_alone_env(lib: Path, work: Path, tag: str) -> dict[str, str]:
    """The environment of a process with lib preloaded on the fake driver (zero-length kernels), an
    HP alone in a self-granting domain of its own (in work, named by tag); launch_proxy.py's too."""
    fake = verify_daemon.build_fake(work / "fc")
    dom = work / f"dom-{tag}" / "gpu0"
    # In a process of its own: fikitd.shm keeps the layout of the first library it loaded, and
    # the libraries compared may lay their slots out differently.
    make = "import sys, pathlib, benchlib\nbenchlib.create_domain(pathlib.Path(sys.argv[1]), sys.argv[2])"
    subprocess.run([sys.executable, "-c", make, str(dom), str(lib)], check=True, cwd=benchlib.BENCH_DIR)
    env = {**os.environ, "FIKIT_LIBRARY": str(lib)}
    env.update(FIKIT_DOMAIN=str(dom), FIKIT_SOCKET=str(work / "nosock"), FIKIT_PRIO="high",
               LD_PRELOAD=str(lib), LD_LIBRARY_PATH=str(fake), FAKECUDA_DURATIONS="*=0")
    return env


def measure(lib: Path, launches: int, shapes: int, touch_kb: int, work: Path, tag: str,
            by_line: bool = False) -> dict[str, Any]:
    """One library's counts per launch (tag names its files in work); with by_line, the source
    lines missing at least 0.05 lines a launch too, of data or of code (a line of code is
    counted at the source line whose instruction first fetched it)."""
    loop, err = benchlib.build_launch_loop(work)
    if loop is None:
        raise SystemExit(f"launch_lines: bench/launch_loop.c not built: {err}")
    env = hp_alone_env(lib, work, tag)
    out = work / f"cg-{tag}.out"
    ll_kb = max(64, touch_kb // 2)  # smaller than what is written between launches
    loop_args = [str(loop), str(launches), "256", str(shapes), str(touch_kb)]
    # A 1 KB instruction cache keeps little of one launch for the next: its misses count the lines
    # of code a launch runs, what a real program's own code evicts between two launches.
    subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--LL={ll_kb * 1024},8,64",
                    "--I1=1024,2,64",
                    f"--cachegrind-out-file={out}", *loop_args],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ann = subprocess.run(["cg_annotate", "--threshold=0", str(out)], check=True, capture_output=True,
                         text=True).stdout
    funcs = parse_functions(ann)
    if not funcs:
        raise SystemExit(f"launch_lines: {lib} has no debug information: build it with -DCMAKE_C_FLAGS=-g")
    per = {name: {"instr": c["Ir"] / launches, "lines": (c["D1mr"] + c["D1mw"]) / launches,
                  "code_lines": c["I1mr"] / launches}
           for name, c in funcs.items()}
    r = {"lib": str(lib), "launches": launches, "shapes": shapes, "touch_kb": touch_kb,
         "instr": sum(v["instr"] for v in per.values()), "lines": sum(v["lines"] for v in per.values()),
         "code_lines": sum(v["code_lines"] for v in per.values()),
         "functions": dict(sorted(per.items(), key=lambda kv: -kv[1]["lines"]))}
    if by_line:
        ev = ("D1mr", "D1mw", "I1mr")
        cmd = ["cg_annotate", "--auto=yes", "--threshold=0", f"--show={','.join(ev)}", str(out)]
        src = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        missed = [{"where": x["where"], "code": x["code"], "read": x["D1mr"] / launches,
                   "written": x["D1mw"] / launches, "code_lines": x["I1mr"] / launches}
                  for x in parse_source_lines(src, ev)]
        for x in missed:
            x["total"] = x["read"] + x["written"] + x["code_lines"]
        r["source_lines"] = sorted((x for x in missed if x["total"] >= 0.05), key=lambda x: -x["total"])
    return r


def build(src: Path, dest: Path) -> Path:
    """A checkout's libfikit.so, optimised as shipped, with debug information."""
    subprocess.run(["cmake", "-S", str(src), "-B", str(dest), "-DCMAKE_BUILD_TYPE=Release",
                    "-DCMAKE_C_FLAGS=-g"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(dest), "-j2"], check=True, stdout=subprocess.DEVNULL)
    return dest / "interpose" / "libfikit.so"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", action="append", default=[], help="a checkout to build and count (repeatable)")
    p.add_argument("--lib", action="append", default=[], help="a libfikit.so built with -g (repeatable)")
    # A kernel settles (sampled 1 in 256) after 392 launches: 20 kernels settle in the first 8%.
    p.add_argument("--launches", type=int, default=100000)
    p.add_argument("--shapes", type=int, default=20, help="kernel ids launched in turn")
    p.add_argument("--touch-kb", type=int, default=512, help="KB written between two launches")
    p.add_argument("--by-line", action="store_true", help="also name the source lines that miss")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not a.src and not a.lib:
        p.error("give a --src or a --lib")
    for tool in ("valgrind", "cg_annotate", "gcc", "cmake"):
        if not shutil.which(tool):
            print(f"launch_lines: {tool} not found (valgrind's cachegrind and a C compiler are needed)",
                  file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="fikit-lines-") as tmp:
        work = Path(tmp)
        libs = [build(Path(src).resolve(), work / f"build{i}") for i, src in enumerate(a.src)]
        libs += [Path(lib).resolve() for lib in a.lib]
        results = [measure(lib, a.launches, a.shapes, a.touch_kb, work, str(i), a.by_line)
                   for i, lib in enumerate(libs)]
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(f"{r['lib']}: per launch {r['instr']:.0f} instructions, {r['lines']:.2f} lines of data "
              f"missed, {r['code_lines']:.1f} lines of code run")
        for name, v in r["functions"].items():
            if v["lines"] >= 0.05 or v["code_lines"] >= 0.05:
                print(f"  {v['lines']:5.2f} lines {v['code_lines']:5.1f} code {v['instr']:6.1f} instructions"
                      f"  {name}")
        if "source_lines" in r:
            print("  by source line (data lines read + written, code lines, a launch):")
            for x in r["source_lines"]:
                counts = f"{x['read']:5.2f} + {x['written']:4.2f} {x['code_lines']:5.2f} code"
                print(f"  {counts}  {x['where']:<16} {x['code'][:80]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
