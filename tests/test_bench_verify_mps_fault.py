"""bench/verify_mps_fault.py (issue 7's GPU check of MPS faults) end to end on the fake driver and the
stand-in MPS (tests/fakebin: control daemon and server; tests/fakecuda joins the server at cuInit).

The real fikitd, fikitctl and libfikit.so; the MPS server and control daemon killed with SIGKILL are
stand-ins. Run twice: the stand-in server ends with its control daemon (the long job of phase B then
hangs on it and is stopped by fikitd after the grace), or outlives it (the job runs on, and fikitd
ends the orphaned server when it stops). What the real MPS does is what the GPU run records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakecuda_harness import REPO, FakeBuild

SCRIPT = REPO / "bench" / "verify_mps_fault.py"


def run_script(
    fake_build: FakeBuild, libfikit: Path, out: Path, extra_env: dict[str, str]
) -> subprocess.Popen[str]:
    drop = ("FIKIT_", "FAKECUDA_", "NOTIFY_", "FAKEMPS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra_env)
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--fake-cuda-dir", str(fake_build.fake_dir), "--lib", str(libfikit),
         "--out", str(out), "--grace-s", "3"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("server", ["ends_with_control", "outlives_control"])
def test_verify_mps_fault_on_the_stand_ins(
    fake_build: FakeBuild, libfikit: Path, tmp_path: Path, server: str
) -> None:
    out = tmp_path / "mf"
    extra = {"FAKEMPS_SERVER_OUTLIVES_CONTROL": "1"} if server == "outlives_control" else {}
    p = run_script(fake_build, libfikit, out, extra)
    text, _ = p.communicate(timeout=150)
    assert p.returncode == 0, text
    s = json.loads((out / "summary.json").read_text())
    failed = [c for c in s["checks"] if c["ok"] is False]
    assert s["ok"] is True and not failed, failed
    names = [c["check"] for c in s["checks"]]
    for key in (
        "job A is a client of the MPS server",
        "A: the job whose MPS server was killed ended failed",
        "A: fikitctl status --json reports the dead server",
        "A: the next job ran as a client of",
        "B: fikitd noticed the killed control daemon and restarted it",
        "B: the job under the killed",
        "B: a new job ran as a client of the restarted",
        "SIGTERM",
        "MPS stopped on shutdown",
    ):
        assert any(key in n for n in names), (key, names)
    t = s["timings"]
    a, b = t["server_kill"], t["control_kill"]
    assert a["ended_by"] == "by itself" and a["job_ended_s"] < 5 and a["fikitd_noticed_s"] <= 2 * 2.0 + 1
    assert b["detected_s"] <= 3 * 2.0 + 1 and b["restarted_s"] <= 5 * 2.0 + 1, b
    if server == "outlives_control":
        assert b["old_server_survived"] and b["job_state_after"] == "running", b
        assert "outlived its control daemon" in (out / "fikitd.log").read_text()
    else:
        assert not b["old_server_survived"] and b["ended_by"] == "fikitd stopped it after the grace", b
    assert "verify_mps_fault: ALL PASS" in text


def test_verify_mps_fault_cleans_up_on_sigterm(fake_build: FakeBuild, libfikit: Path, tmp_path: Path) -> None:
    """`timeout` sends SIGTERM: jobs cancelled, fikitd stopped, MPS gone, and the summary still written."""
    out = tmp_path / "mf"
    p = run_script(fake_build, libfikit, out, {})
    log = out / "fikitd.log"
    deadline = time.monotonic() + 60
    while "is a client of MPS server" not in (log.read_text(errors="replace") if log.exists() else ""):
        assert p.poll() is None and time.monotonic() < deadline, "job A never became an MPS client"
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, text
    s = json.loads((out / "summary.json").read_text())
    by = {c["check"]: c for c in s["checks"]}
    assert by["verify_mps_fault ran to the end"]["ok"] is False
    assert by["MPS stopped on shutdown"]["ok"] is True, by["MPS stopped on shutdown"]
    assert "every job ended by cancel" not in by
    assert log.read_text().rstrip().endswith("fikitd.daemon: stopped")
    assert "job 1 cancelled" in log.read_text()
