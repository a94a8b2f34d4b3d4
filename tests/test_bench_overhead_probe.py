"""bench/overhead_probe.py rehearsed on the fake driver: its toggle variant, one process whose
library measures in alternate stretches, gives both halves and their ratio (timing on a CPU says
nothing of the GPU: the mechanics are checked, not the figures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakecuda_harness import REPO, FakeBuild


def test_toggle_variant_splits_each_window(fake_build: FakeBuild, libfikit: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "CUDA_"))}
    env["LD_LIBRARY_PATH"] = str(fake_build.fake_dir)
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    p = subprocess.run(
        [sys.executable, "overhead_probe.py", "--device", "fake", "--lib", str(libfikit), "--out",
         str(tmp_path), "--models", "resnet50",
         "--variants", "plain,toggle,toggle_b,toggle_nosample,toggle_bypass",
         "--lib-b", str(libfikit), "--reps", "2", "--window-s", "0.6", "--discard-s", "0.1",
         "--toggle-ms", "50", "--cpus", cpus, "--budget-s", "60"],
        cwd=REPO / "bench", env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "overhead.jsonl").read_text().splitlines()]
    toggled = [r for r in rows if r["variant"].startswith("toggle")]
    variants = ["toggle", "toggle_b", "toggle_bypass", "toggle_nosample"]
    assert sorted(r["variant"] for r in toggled) == sorted(variants * 2)
    for r in toggled:  # both halves of every window measured, together the whole window
        assert r["on"]["n"] > 0 and r["off"]["n"] > 0
        assert r["on"]["n"] + r["off"]["n"] == r["stats"]["n"]
    # each preloaded worker's FIKIT_STATS, written as it exited: what the library counted
    stats = {f.name.split(".")[0]: json.loads(f.read_text()) for f in (tmp_path / "stats").glob("*.json")}
    assert sorted(stats) == sorted(f"resnet50-{v}" for v in variants), sorted(stats)
    assert all(sum(s["launches"].values()) > 0 for s in stats.values())
    result = json.loads((tmp_path / "overhead.json").read_text())
    assert result["lib_b"] == str(libfikit)
    assert result["variants"]["toggle_nosample"] == {"FIKIT_SAMPLE": "1000000"}
    for v in ("toggle", "toggle_b", "toggle_nosample", "toggle_bypass"):
        entry = result["models"]["resnet50"][v]
        assert entry["toggle_on_vs_off_p50"] > 0 and len(entry["toggle_on_vs_off_p50_spread"]) == 2
    assert "measuring on over off in the same process" in p.stdout
    assert "toggle_bypass the library on over off in the same process" in p.stdout


def test_toggle_b_needs_a_second_library(libfikit: Path, tmp_path: Path) -> None:
    missing = ["--lib-b", str(tmp_path / "nope.so")]
    for extra, said in (([], "toggle_b variant needs --lib-b"), (missing, "no such file")):
        p = subprocess.run(
            [sys.executable, "overhead_probe.py", "--device", "fake", "--lib", str(libfikit), "--out",
             str(tmp_path / "o"), "--variants", "toggle_b", *extra],
            cwd=REPO / "bench", capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert p.returncode == 2 and said in p.stderr, p.stderr


def test_toggle_quiet_runs_each_worker_in_a_domain(fake_build: FakeBuild, libfikit: Path,
                                                   tmp_path: Path) -> None:
    """--in-domain: each preloaded worker joins a self-granted domain of its own at high priority (the
    fake models' requests are too short to go quiet: the mechanics are checked, not quietness)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "CUDA_"))}
    env["LD_LIBRARY_PATH"] = str(fake_build.fake_dir)
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    p = subprocess.run(
        [sys.executable, "overhead_probe.py", "--device", "fake", "--lib", str(libfikit), "--out",
         str(tmp_path), "--models", "resnet50", "--variants", "plain,toggle,toggle_quiet", "--in-domain",
         "--reps", "2", "--window-s", "0.6", "--discard-s", "0.1", "--toggle-ms", "50", "--cpus", cpus,
         "--budget-s", "60"],
        cwd=REPO / "bench", env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [json.loads(ln) for ln in (tmp_path / "overhead.jsonl").read_text().splitlines()]
    quiet = [r for r in rows if r["variant"] == "toggle_quiet"]
    assert len(quiet) == 2 and all(r["on"]["n"] > 0 and r["off"]["n"] > 0 for r in quiet), quiet
    stats = {f.name.split(".")[0]: json.loads(f.read_text()) for f in (tmp_path / "stats").glob("*.json")}
    assert sorted(stats) == ["resnet50-toggle", "resnet50-toggle_quiet"], sorted(stats)
    for s in stats.values():
        (dom,) = s["domains"]
        assert dom["gpu"] == 0 and dom["slot"] >= 0 and dom["prio"] == 0 and dom["quiet"]["stride"] == 32, dom
    assert "toggle_quiet quiet launches on over off in the same process" in p.stdout


def test_toggle_quiet_needs_a_domain(libfikit: Path, tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "overhead_probe.py", "--device", "fake", "--lib", str(libfikit), "--out",
         str(tmp_path), "--variants", "toggle_quiet"],
        cwd=REPO / "bench", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "toggle_quiet needs --in-domain" in p.stderr, p.stderr
