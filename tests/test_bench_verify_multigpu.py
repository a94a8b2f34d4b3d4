"""bench/verify_multigpu.py (issue 8's proof on two GPUs) rehearsed end to end on the fake driver.

The real fikitd (with two fake GPUs, FIKIT_FAKE_GPUS, and the stand-in MPS), the real fikitctl
(`run` for the single-GPU processes, `submit` for the two-GPU job) and the real libfikit.so; the
workers run tests/fakecuda kernels instead of models (bench/fake_workloads.py). Timing on a CPU
says nothing of the GPU, so the targets are not checked here: the mechanics are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakecuda_harness import REPO, FakeBuild, fake_uuid


def test_verify_multigpu_rehearsal(fake_build: FakeBuild, libfikit: Path, tmp_path: Path) -> None:
    out = tmp_path / "mg"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FIKIT_", "FAKECUDA_", "NOTIFY_", "CUDA_"))}  # fmt: skip
    env["FIKIT_COMMIT"] = "0123456789abcdef0123456789abcdef01234567"
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "verify_multigpu.py"), "--fake-cuda-dir",
         str(fake_build.fake_dir), "--lib", str(libfikit), "--out", str(out), "--window-s", "0.6",
         "--discard-s", "0.2", "--warmup-s", "0.3", "--reps", "2", "--budget-s", "150"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] is True and s["fake"] is True
    fake = "fake GPU (tests/fakecuda)"
    assert s["gpus"] == [{"index": i, "name": fake, "uuid": fake_uuid(i)} for i in (0, 1)]
    assert s["commit"] == env["FIKIT_COMMIT"] and "date" in s and "driver" in s
    by = {c["check"]: c for c in s["checks"]}
    for key in ("fikitd ready", "a domain per GPU", "built and warmed up",
                "registered in the domain of each GPU", "slot in both domains", "top shows every GPU",
                "ended done, exit 0", "held or sent to co-run in each domain",
                "FIKIT_STATS lists both domains"):
        assert any(key in name and c["ok"] for name, c in by.items()), (key, list(by))
    # the targets are GPU measurements: not applicable on the fake driver
    assert [c["ok"] for name, c in by.items() if "single-GPU targets" in name] == [None, None]
    # every window of both repetitions, interleaved, measured
    rows = [json.loads(ln) for ln in (out / "raw.jsonl").read_text().splitlines()]
    modes = ("solo_hp", "solo_lp", "solo_lp2", "mps_prio", "fikit", "fikit_hp")
    assert sorted((r["rep"], r["mode"]) for r in rows) == sorted((rep, m) for rep in (0, 1) for m in modes)
    # the HP-alone window under fikit runs only the HPs, and gives the floor fikit's HP is judged over
    assert all(sorted(r["hp"]) == ["hp0", "hp1"] and r["lp"] == {} for r in rows if r["mode"] == "fikit_hp")
    assert all(r["ok"] for r in rows), [r["error"] for r in rows if not r["ok"]]
    # every window says how busy the host's cores were, and how much the hypervisor stole
    assert all(0 <= r["cpu"]["all"]["busy_pct"] <= 100 and "steal_pct" in r["cpu"]["all"] for r in rows)
    assert s["reps_done"] == 2
    # per GPU: its pair registered in its domain, the two-GPU job in both
    for g in s["per_gpu"]:
        roles = sorted(c["role"] for c in g["registered"])
        assert roles == sorted([f"hp{g['index']}", f"lp{g['index']}", "lp2"]), g["registered"]
        assert g["hp_p50_ratio"]["fikit"]["n"] == 2 and g["lp_vs_mps_prio"]["n"] == 2
        assert g["hp_p50_ratio"]["fikit_hp"]["n"] == 2 and g["hp_p50_vs_fikit_hp"]["n"] == 2
        assert g["held_launches_in_fikit_windows"][f"hp{g['index']}"] == 0
    job = s["two_gpu_job"]
    assert sorted(c["gpu"] for c in job["registered"]) == [0, 1]
    assert job["job"]["state"] == "done" and job["job"]["gpu"] == 0  # placed by its CUDA_VISIBLE_DEVICES
    assert {f.name.split(".")[1] for f in (out / "stats").glob("*.json")} == {
        "fikit-hp0-bert", "fikit-lp0-vgg16_infer", "fikit-hp1-resnet50", "fikit-lp1-resnet50_train",
        "fikit-lp2-resnet50_train"}  # fmt: skip
    assert (out / "fikitd.log").read_text().count("registered at priority") == 6
    assert json.loads((out / "status.json").read_text())["gpus"][1]["uuid"] == fake_uuid(1)
