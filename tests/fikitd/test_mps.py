"""MPS manage mode against the stand-in control binary (tests/fakebin): start, death, restart, quit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from daemon_fixture import config_text, start_daemon
from helpers import wait_until
from test_jobs import ENV, wait_state


def control_log(root: Path) -> list[str]:
    path = root / "log" / "mps" / "control.log"
    return [ln.split(" ", 2)[2] for ln in path.read_text().splitlines()] if path.exists() else []


def test_manage_start_restart_quit(fk_root: Path) -> None:
    d = start_daemon(fk_root, mps="manage")
    try:
        # READY came only after the control daemon answered
        assert control_log(fk_root)[:2] == ["start", "cmd get_server_list"]
        mps = d.call("status")["mps"]
        assert (mps["mode"], mps["state"], mps["restarts"]) == ("manage", "running", 0)
        assert mps["pipe_dir"] == str(fk_root / "run" / "mps")
        low = d.call("submit", argv=["sh", "-c", "env"], cwd="/", env=ENV, prio="low")["job"]
        wait_state(d, low["id"])
        out = d.call("logs", job=low["id"])["data"]
        assert f"CUDA_MPS_PIPE_DIRECTORY={fk_root}/run/mps" in out and "CUDA_MPS_CLIENT_PRIORITY=1" in out
        # the control daemon dies: fikitd notices and starts a new one
        pidfile = fk_root / "run" / "mps" / "nvidia-cuda-mps-control.pid"
        first = int(pidfile.read_text())
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: d.call("status")["mps"]["restarts"] >= 1
                   and d.call("status")["mps"]["state"] == "running", timeout=15, what="MPS restart")
        assert int(pidfile.read_text()) != first
        assert control_log(fk_root).count("start") == 2
    finally:
        assert d.stop() == 0
        d.close()
    assert control_log(fk_root)[-1] == "cmd quit"
    assert not (fk_root / "run" / "mps" / "control").exists()


def test_manage_without_the_binary_runs_without_mps(fk_root: Path) -> None:
    d = start_daemon(fk_root, mps="manage", env={"PATH": "/usr/bin:/bin"})  # no stand-in on PATH
    try:
        mps = d.call("status")["mps"]
        assert mps["state"] == "unavailable" and "not found" in mps["reason"]
        job = d.call("submit", argv=["true"], cwd="/", env=ENV)["job"]
        assert wait_state(d, job["id"])["state"] == "done"
    finally:
        assert d.stop() == 0
        d.close()


def test_attach_mode_does_not_start_or_stop(fk_root: Path) -> None:
    text = config_text(fk_root, "attach")
    text = text.replace('mode = "attach"', f'mode = "attach"\npipe_dir = "{fk_root}/pipe"')
    d = start_daemon(fk_root, config=text)
    try:
        mps = d.call("status")["mps"]
        assert (mps["mode"], mps["state"], mps["pipe_dir"]) == ("attach", "down", f"{fk_root}/pipe")
    finally:
        assert d.stop() == 0
        d.close()
    assert control_log(fk_root) == []
