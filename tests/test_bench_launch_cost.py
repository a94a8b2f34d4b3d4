"""bench/launch_lines.py (cache lines the library misses a launch, counted by cachegrind),
bench/launch_proxy.py (its cost a launch in a Python program on the fake driver) and
bench/launch_loop.c's costs priced inside one process (EXTRA +16, +32, +128), warm and cold.

The parser is checked on cg_annotate's own format; the whole of launch_lines runs where valgrind
is installed (CI has none: skipped there)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakecuda_harness import REPO, FakeBuild

sys.path.insert(0, str(REPO / "bench"))
import benchlib
import launch_lines


def _row(counts: list[str], name: str) -> str:
    return "  ".join(counts) + "  " + name


ANNOTATED = "\n".join([
    "Ir  I1mr  ILmr  Dr  D1mr  DLmr  Dw  D1mw  DLmw  file:function",
    _row(["655,960,841 (96.40%)", "26 ( 1.14%)", "26 ( 1.16%)", "81,829 ( 1.11%)", "40,083 ( 4.09%)",
          "40,082 ( 4.09%)", "163,986,525 (97.85%)", "163,860,080 (99.87%)", "163,860,079 (99.87%)"],
         "???:main"),
    _row(["3,011,274 ( 0.44%)", "13 ( 0.57%)", "13 ( 0.58%)", "803,020 (10.94%)", "80,003 ( 8.17%)",
          "80,002 ( 8.17%)", "656,320 ( 0.39%)", "40,001 ( 0.02%)", "40,001 ( 0.02%)"],
         "/src/fikit/interpose/src/launch.c:before"),
    _row(["1,520,829 ( 0.22%)", "11 ( 0.48%)", "11 ( 0.48%)", "563,694 ( 7.68%)", "2,588 ( 0.26%)",
          "2,588 ( 0.26%)", "292,747 ( 0.17%)", "0", "0"], "/src/fikit/interpose/src/launch.c:after"),
    _row(["."] * 9, "struct fikit_dev *d = fikit_dev_for_launch(&ctx);"),
])  # fmt: skip


def test_parse_keeps_the_library_functions_and_their_counts() -> None:
    funcs = launch_lines.parse_functions(ANNOTATED)
    assert set(funcs) == {"launch.c:before", "launch.c:after"}
    assert funcs["launch.c:before"]["Ir"] == 3011274
    assert funcs["launch.c:before"]["D1mr"] == 80003 and funcs["launch.c:before"]["D1mw"] == 40001
    assert funcs["launch.c:after"]["D1mw"] == 0


SOURCES = "\n".join([
    "-" * 80,
    "-- Auto-annotated source: /src/fikit/interpose/src/launch.c",
    "-" * 80,
    "D1mr             D1mw             ",
    "",
    "-- line 570 ----------------------------------------",
    "      .                .               struct fikit_slot *me = d->me;",
    "100,001 ( 2.37%)       0               atomic_fetch_add_explicit(&me->path_launches[path], 1);",
    "      0                0               if (fikit_cfg.passthrough)",
    "-- line 823 ----------------------------------------",
    "100,005 ( 2.37%) 300,001 ( 0.04%)  WRAP_LAUNCH_KERNEL(cuLaunchKernel)",
    "-" * 80,
    "-- Auto-annotated source: /usr/include/stdio.h",
    "-" * 80,
    "      9                9           extern int printf(const char *, ...);",
    "-" * 80,
    "D1mr             D1mw             ",
    "-" * 80,
    "953,399 (22.62%) 702,329 ( 0.09%)  events annotated",
])  # fmt: skip


def test_source_lines_are_numbered_from_the_marks_and_kept_to_the_library() -> None:
    rows = launch_lines.parse_source_lines(SOURCES, ("D1mr", "D1mw"))
    assert [r["where"] for r in rows] == ["launch.c:571", "launch.c:572", "launch.c:823"]
    assert rows[0]["D1mr"] == 100001 and rows[0]["D1mw"] == 0
    assert rows[0]["code"].startswith("atomic_fetch_add_explicit(&me->path_launches")
    assert rows[2]["D1mw"] == 300001 and rows[2]["code"] == "WRAP_LAUNCH_KERNEL(cuLaunchKernel)"


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_counts_lines_a_launch() -> None:
    p = subprocess.run([sys.executable, "launch_lines.py", "--src", str(REPO), "--launches", "3000",
                        "--shapes", "4", "--by-line", "--json"], cwd=REPO / "bench", capture_output=True,
                       text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (r,) = json.loads(p.stdout)
    assert r["launches"] == 3000
    # every launch reads some of the library's state, and a launch is far from 100 lines
    assert 3 < r["lines"] < 100, r
    # and runs tens of lines of its code, each a miss when a program's own code evicted it
    assert 5 < r["code_lines"] < 200 and r["code_lines"] <= r["instr"], r
    assert any(name.startswith("launch.c:") for name in r["functions"]), r
    # the lines that miss are named in the library's own sources (its inline steps in its header),
    # the wrappers' file among them
    files = {x["where"].split(":")[0] for x in r["source_lines"]}
    assert files and all(f.endswith((".c", ".h")) for f in files), r
    assert any(x["where"].startswith("launch.c:") and x["code"] for x in r["source_lines"]), r["source_lines"]
    # the code lines too: most of a launch's are named by the source line that fetched them
    assert sum(x["code_lines"] for x in r["source_lines"]) > 0.5 * r["code_lines"], r


def test_launch_proxy_toggles_measuring_inside_one_process(libfikit: Path) -> None:
    """bench/launch_proxy.py: both halves measured in one preloaded process (the figures are the
    CPU's, never asserted)."""
    args = ["--rounds", "1", "--seconds", "0.5", "--kernels", "2", "--per-request", "20", "--every", "2"]
    args.append("--json")
    p = subprocess.run([sys.executable, "launch_proxy.py", "--lib", str(libfikit), *args],
                       cwd=REPO / "bench", capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (r,) = json.loads(p.stdout)
    assert r["lib"] == str(libfikit.resolve())
    assert r["requests_on"] > 0 and r["requests_off"] > 0, r
    assert r["on_us"] > 0 and r["off_us"] > 0 and r["ratio"] == pytest.approx(r["on_us"] / r["off_us"]), r


def test_launch_loop_prices_inside_one_process(fake_build: FakeBuild, libfikit: Path, tmp_path: Path) -> None:
    """launch_loop.c's EXTRA +16/+32/+128 do the priced thing on odd chunks only and report
    diff_ns; +128 bypasses the library on even chunks, so only odd chunks' launches are counted
    (after the 1000 warm-up launches, which all are)."""
    loop, err = benchlib.build_launch_loop(tmp_path)
    assert loop, err
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "CUDA_"))}
    env.update(LD_LIBRARY_PATH=str(fake_build.fake_dir), FAKECUDA_DURATIONS="*=0",
               FIKIT_SOCKET="/nonexistent/x")
    runs: dict[int, dict[str, object]] = {}
    for extra in (17, 32, 128):
        stats = tmp_path / f"stats-{extra}.json"
        p = subprocess.run([loop, "2560", "256", "4", "0", str(extra)], env={
            **env, "LD_PRELOAD": str(libfikit), "FIKIT_STATS": str(stats)},
            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
        runs[extra] = json.loads(p.stdout.splitlines()[-1])
        assert runs[extra]["extra"] == extra and isinstance(runs[extra]["diff_ns"], float)
        counted = json.loads(stats.read_text())["launches"]["cuLaunchKernel"]
        assert counted == (1000 + 5 * 256 if extra == 128 else 1000 + 2560), (extra, counted)
    p = subprocess.run([loop, "2560", "256", "4", "0", "128"], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 2 and "needs libfikit.so preloaded" in p.stdout


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="CODE_KB runs x86-64 code")
def test_launch_loop_leaves_cache_evictions_out_of_the_time(fake_build: FakeBuild, tmp_path: Path) -> None:
    """TOUCH_KB writes a buffer, CODE_KB runs a block of code and PAGES writes a line in each of
    that many pages before each launch, so that the library meets its state and its code out of
    the caches and the TLB, as in a real program; none is timed (each takes far longer than a
    launch), and the launches are all made and counted."""
    loop, err = benchlib.build_launch_loop(tmp_path)
    assert loop, err
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "CUDA_"))}
    env.update(LD_LIBRARY_PATH=str(fake_build.fake_dir), FAKECUDA_DURATIONS="*=0")
    for touch, code, pages in (("256", "0", "0"), ("0", "256", "0"), ("256", "256", "0"), ("0", "0", "4096")):
        p = subprocess.run([loop, "1024", "256", "4", touch, "0", code, pages], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        r = json.loads(p.stdout.splitlines()[-1])
        assert (r["touch_kb"], r["code_kb"], r["pages"], r["launches"]) == (int(touch), int(code), int(pages),
                                                                             1024), r
        # 256 KB written or run before each launch fill most of the run's time, which the
        # launches' own (the time reported) leaves out
        timed_s = r["mean_us"] * 1024 / 1e6
        assert timed_s < r["wall_s"] / 2, (r, timed_s)
    for bad in (["-1"], ["0", "-1"]):  # CODE_KB, PAGES
        p = subprocess.run([loop, "1024", "256", "4", "0", "0", *bad], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
        assert p.returncode == 2 and "usage" in p.stdout


def test_launch_loop_settles_every_kernel_before_timing(fake_build: FakeBuild, libfikit: Path,
                                                        tmp_path: Path) -> None:
    """SETTLE launches each of the SHAPES ids that many times before the timing: with 400, every
    kernel has its 32 runs measured and is sampled 1 in 1024 from then on, as in a torch HP, so the
    timed launches price the settled path (without it, about a fifth of a short loop's timed
    launches were sampled: bench/results/2026-11-26-h100-price15/RUNS.md); a negative SETTLE is
    refused."""
    loop, err = benchlib.build_launch_loop(tmp_path)
    assert loop, err
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "CUDA_"))}
    env.update(LD_LIBRARY_PATH=str(fake_build.fake_dir), FAKECUDA_DURATIONS="*=0",
               FIKIT_SOCKET="/nonexistent/x", LD_PRELOAD=str(libfikit))
    measured = {}
    for settle in ("0", "400"):
        stats = tmp_path / f"stats-{settle}.json"
        p = subprocess.run([loop, "512", "256", "4", "0", "0", "0", "0", settle],
                           env={**env, "FIKIT_STATS": str(stats)}, capture_output=True, text=True, timeout=60,
                           check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        r = json.loads(p.stdout.splitlines()[-1])
        assert (r["settle"], r["launches"]) == (int(settle), 512), r
        kernels = {tuple(k["grid"]): k for k in json.loads(stats.read_text())["kernels"]}
        shapes = [(gx, 1, 1) for gx in (1, 2, 3, 4)]
        measured[settle] = [kernels[s]["dur_us"]["n"] for s in shapes]
        # the 1000 warm-up launches are the first id's; SETTLE adds its launches of each, the loop 128
        extra = int(settle)
        assert [kernels[s]["count"] for s in shapes] == [1000 + extra + 128] + [extra + 128] * 3
    # unsettled: the loop's 128 launches of a new id are measured 8 times and then 1 in 16;
    # settled: each id has its ring of 32 runs full (and a sample at most now and then beyond it)
    assert all(n < 32 for n in measured["0"][1:]), measured
    assert all(32 <= n <= 34 for n in measured["400"]), measured
    p = subprocess.run([loop, "512", "256", "4", "0", "0", "0", "0", "-1"], env=env, capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 2 and "SETTLE" in p.stdout
