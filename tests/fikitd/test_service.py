"""The service contract: sd_notify messages, clean stop, reload, refusing a second daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_fixture import REPO, DaemonProc, start_daemon


def test_ready_status_watchdog_stopping_and_exit_0(fk_root: Path) -> None:
    d = start_daemon(fk_root, env={"WATCHDOG_USEC": "200000"})
    try:
        lines = d.notify.lines()
        assert "READY=1" in lines
        assert any(m.startswith("STATUS=") for m in lines)
        assert f"MAINPID={d.pid}" in lines
        assert d.socket.exists() and oct(d.socket.stat().st_mode & 0o777) == "0o666"
        # WATCHDOG=1 at half of WATCHDOG_USEC (0.1 s): several in half a second.
        time.sleep(0.5)
        assert d.notify.lines().count("WATCHDOG=1") >= 3
        t0 = time.monotonic()
        assert d.stop(timeout=10) == 0
        assert time.monotonic() - t0 < 10
        d.notify.wait_for("STOPPING=1", timeout=1)
        assert not d.socket.exists()
    finally:
        d.close()


def test_watchdog_for_another_pid_is_ignored(fk_root: Path) -> None:
    d = start_daemon(fk_root, env={"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    try:
        time.sleep(0.3)
        assert "WATCHDOG=1" not in d.notify.lines()
    finally:
        assert d.stop() == 0
        d.close()


def test_runs_without_systemd(fk_root: Path) -> None:
    """No NOTIFY_SOCKET: the daemon just runs and answers."""
    root = fk_root
    d = start_daemon(root, wait=False)
    d.stop()
    env = dict(d.env)
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "fikitd.main", "--config", str(d.config)], cwd=REPO,
                            env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not d.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.call("hello")["protocol"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        d.close()
    assert proc.returncode == 0, err
    assert b"<6>fikitd" in err  # journald priority prefixes


def test_second_daemon_on_same_paths_is_refused(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    second = subprocess.run([sys.executable, "-m", "fikitd.main", "--config", str(d.config)], cwd=REPO,
                            env={**d.env}, capture_output=True, timeout=20)
    assert second.returncode == 1
    assert b"another fikitd" in second.stderr
    assert d.call("hello")["protocol"] == 1  # the first one is untouched


def test_stale_socket_file_is_replaced(fk_root: Path) -> None:
    root = fk_root
    (root / "run").mkdir(parents=True)
    (root / "run" / "fikitd.sock").write_text("stale")
    d = start_daemon(root)
    try:
        assert d.call("hello")["protocol"] == 1
    finally:
        assert d.stop() == 0
        d.close()


def test_sighup_reload_good_and_bad(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    text = d.config.read_text()
    d.config.write_text(text + '\n[scheduler]\nbudget_us = 321\nmode = "strict"\n')
    os.kill(d.pid, signal.SIGHUP)
    d.notify.wait_for("RELOADING=1")
    deadline = time.monotonic() + 5
    while d.call("status")["scheduler"]["budget_us"] != 321:
        assert time.monotonic() < deadline, d.log()
        time.sleep(0.05)
    d.config.write_text(text + "\n[scheduler]\nbudget_us = -5\n")
    os.kill(d.pid, signal.SIGHUP)
    d.notify.wait_for(lambda m: m.startswith("STATUS=reload failed"))
    status = d.call("status")
    assert status["scheduler"]["budget_us"] == 321  # the running configuration stays
    assert "reload refused" in d.log() and "scheduler.budget_us" in d.log()


def test_bad_config_refuses_to_start(fk_root: Path) -> None:
    d = start_daemon(fk_root, extra="[scheduler]\nbudgt_us = 3\n", wait=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(10) == 1
        assert "scheduler.budgt_us" in d.log() and "fikit.toml:" in d.log()
        assert "READY=1" not in d.notify.lines()
    finally:
        d.close()
