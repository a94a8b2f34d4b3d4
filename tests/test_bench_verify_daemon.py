"""bench/verify_daemon.py (issue 5's GPU proof) end to end on the fake driver and the stand-in MPS.

The real fikitd, the real fikitctl and the real libfikit.so; only libcuda.so.1 and
nvidia-cuda-mps-control are stand-ins. What the GPU run adds is the real MPS server and real kernels.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fakecuda_harness import REPO, FakeBuild


def test_verify_daemon_on_the_fake_driver(fake_build: FakeBuild, libfikit: Path, tmp_path: Path) -> None:
    out = tmp_path / "vd"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_", "NOTIFY_"))}
    env["FIKIT_COMMIT"] = "0123456789abcdef0123456789abcdef01234567"
    p = subprocess.run(
        [sys.executable, str(REPO / "bench" / "verify_daemon.py"),
         "--fake-cuda-dir", str(fake_build.fake_dir), "--lib", str(libfikit), "--out", str(out)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] is True
    by = {c["check"]: c for c in s["checks"]}
    failed = [c for c in s["checks"] if c["ok"] is False]
    assert not failed, failed
    for key in ("daemon ready", "MPS managed and running", "hp job", "lp job", "in SQLite",
                "started with its stored profile merged", "SIGTERM", "STOPPING=1", "MPS stopped on shutdown"):
        assert any(key in name and c["ok"] for name, c in by.items()), (key, list(by))
    merged = [c for name, c in by.items() if "stored profile merged" in name]
    assert len(merged) == 2 and all(c["evidence"]["kernels_with_merged_samples"] >= 1 for c in merged)
    stopped = by["MPS stopped on shutdown"]["evidence"]
    assert stopped["mps_pids_before"] and not stopped["alive_after"]
    assert s["commit"] == env["FIKIT_COMMIT"]
    assert (out / "fikitd.log").read_text().count("registered at priority") == 4
    assert len(list((out / "stats").glob("*.json"))) == 4


def test_own_samples_bound() -> None:
    """The bound the preload check uses: launches 0..7 all sampled, then one in 16."""
    sys.path.insert(0, str(REPO / "bench"))
    import verify_daemon

    for c in range(0, 300):
        sampled = sum(1 for i in range(c) if i < 8 or i % 16 == 0)
        assert verify_daemon.own_samples_max(c) >= sampled


def test_notify_without_sdnotify(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The GPU machine has no sdnotify: fikitd.notify must still deliver READY=1 itself."""
    path = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(path))
    rx.settimeout(2)
    monkeypatch.setitem(sys.modules, "sdnotify", None)  # import sdnotify -> ImportError
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    from fikitd.notify import Notifier

    n = Notifier()
    assert n.enabled
    n.ready("up")
    msg = rx.recv(4096).decode()
    rx.close()
    assert "READY=1" in msg.splitlines() and "STATUS=up" in msg.splitlines()
