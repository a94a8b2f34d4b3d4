"""Every command against a real fikitd process (MPS off, state in a temporary directory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fikitctl import main as _main  # noqa: F401

import fikitd.protocol  # noqa: F401  (loaded before run_as forks and drops privileges)

from .conftest import run_cli
from .daemon_helpers import NOBODY, Daemon, run_as, start

JOB_KEYS = {"id", "name", "user", "uid", "argv", "cwd", "prio", "gpu", "state", "exit_code", "pid",
            "submitted_at", "started_at", "ended_at", "log_dir", "reason"}


@pytest.fixture(scope="module")
def daemon(libfikit: Path) -> Iterator[Daemon]:
    """One daemon for the module (starting one costs about a second), with the built libfikit.so."""
    yield from start(libfikit)


@pytest.fixture
def workdir(daemon: Daemon) -> Path:
    """A directory every user can enter: jobs run in the submitter's cwd."""
    path = daemon.base / f"work-{time.monotonic_ns()}"
    path.mkdir()
    os.chmod(path, 0o777)
    return path


def cli(daemon: Daemon, *args: str, cwd: Path | None = None, timeout: float = 30,
        **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["--socket", daemon.socket, *args], env=daemon.env(**env), cwd=cwd, timeout=timeout)


def wait_state(daemon: Daemon, job: str, states: set[str], timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        shown = json.loads(cli(daemon, "show", job, "--json").stdout)
        if shown["state"] in states or time.monotonic() > deadline:
            return dict(shown)
        time.sleep(0.1)


def test_submit_wait_exits_with_the_jobs_code(daemon: Daemon, workdir: Path) -> None:
    proc = cli(daemon, "submit", "--wait", "--", "sh", "-c", "echo out; exit 3", cwd=workdir)
    assert proc.returncode == 3, proc.stderr
    job = proc.stdout.strip()
    assert job.isdigit()
    shown = json.loads(cli(daemon, "show", job, "--json").stdout)
    assert set(shown) >= JOB_KEYS
    assert (shown["state"], shown["exit_code"], shown["cwd"]) == ("failed", 3, str(workdir))


def test_submit_follow_streams_both_outputs(daemon: Daemon, workdir: Path) -> None:
    script = "echo one; echo warn >&2; sleep 0.4; echo two"
    proc = cli(daemon, "submit", "--follow", "--name", "followed", "--", "sh", "-c", script, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "one\ntwo\n"
    assert "warn" in proc.stderr and "submitted" in proc.stderr


def test_submit_script_runs_in_the_callers_cwd_with_its_env(daemon: Daemon, workdir: Path) -> None:
    script = workdir / "job.sh"
    script.write_text('#!/bin/sh\necho "cwd=$(pwd) var=$FIKITCTL_TEST_VAR"\n')
    script.chmod(0o755)
    plain = workdir / "noshebang.sh"
    plain.write_text('echo "plain $0"\n')  # not executable, no #!: run by sh
    proc = cli(daemon, "submit", "--wait", "--json", "job.sh", cwd=workdir, FIKITCTL_TEST_VAR="hello")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["state"] == "done" and set(job) >= JOB_KEYS
    logs = cli(daemon, "logs", str(job["id"]))
    assert logs.stdout == f"cwd={workdir} var=hello\n"
    proc = cli(daemon, "submit", "--follow", "noshebang.sh", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("plain")


def test_submit_json_without_wait(daemon: Daemon, workdir: Path) -> None:
    proc = cli(daemon, "submit", "--json", "--prio", "low", "--name", "j", "--", "true", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert (job["name"], job["prio"]) == ("j", 2)
    assert wait_state(daemon, str(job["id"]), {"done"})["state"] == "done"


def test_jobs_show_cancel_and_logs(daemon: Daemon, workdir: Path) -> None:
    proc = cli(daemon, "submit", "--name", "sleeper", "--", "sh", "-c", "echo started; exec sleep 60",
               cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    assert wait_state(daemon, job, {"running"})["state"] == "running"

    listing = cli(daemon, "jobs")
    assert listing.returncode == 0
    header, *rows = listing.stdout.splitlines()
    assert header.split()[:6] == ["ID", "NAME", "USER", "PRIO", "GPU", "STATE"]
    row = next(r for r in rows if r.split()[0] == job)
    assert "sleeper" in row and "running" in row

    as_json = json.loads(cli(daemon, "jobs", "--json", "--state", "running").stdout)
    assert job in [str(j["id"]) for j in as_json]
    assert all(j["state"] == "running" for j in as_json)

    text = cli(daemon, "show", job).stdout
    assert "state:" in text and "running" in text and "sleeper" in text

    deadline = time.monotonic() + 10
    while "started" not in cli(daemon, "logs", job).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "fikitctl", "--socket", daemon.socket, "logs", "-f", job],
        env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    cancelled = cli(daemon, "cancel", job)
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_state(daemon, job, {"cancelled"})["state"] == "cancelled"
    out, _ = follower.communicate(timeout=15)
    assert follower.returncode == 0 and out == "started\n"

    done = json.loads(cli(daemon, "jobs", "--all", "--state", "cancelled", "--json").stdout)
    assert job in [str(j["id"]) for j in done]
    assert job not in cli(daemon, "jobs").stdout.split()


def test_unknown_job_is_one_line(daemon: Daemon) -> None:
    for command in ("show", "cancel", "logs"):
        proc = cli(daemon, command, "987654")
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("fikitctl: ")


def test_status(daemon: Daemon) -> None:
    proc = cli(daemon, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {"daemon", "mps", "gpus", "clients", "scheduler"} <= set(json.loads(proc.stdout))
    text = cli(daemon, "status")
    assert text.returncode == 0
    heads = [line.split(":")[0] for line in text.stdout.splitlines() if not line.startswith(" ")]
    assert heads[:3] == ["daemon", "MPS", "scheduler"] and "clients" in heads
    assert daemon.socket in text.stdout


def test_top_once_and_json(daemon: Daemon) -> None:
    proc = cli(daemon, "top", "--json", "--interval", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {"taken_at", "gpus"}
    proc = cli(daemon, "top", "--once", "--interval", "0.1", COLUMNS="60", NO_COLOR="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fikit top") and "\x1b[" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 60


def test_profiles(daemon: Daemon) -> None:
    proc = cli(daemon, "profiles")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(cli(daemon, "profiles", "list", "--json").stdout) == []
    export = cli(daemon, "profiles", "export", "--csv")
    assert export.returncode == 0 and export.stdout.startswith("prog,id,name,count")
    assert json.loads(cli(daemon, "profiles", "export", "--json").stdout) == []
    assert cli(daemon, "profiles", "show", "nothing", "--json").stdout.strip() == "[]"
    assert cli(daemon, "profiles", "rm", "nothing").returncode == 0  # root may


def test_doctor_sees_the_daemon(daemon: Daemon) -> None:
    proc = cli(daemon, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["daemon"]["ok"], checks["daemon"]
    assert checks["socket permissions"]["ok"], checks["socket permissions"]
    text = cli(daemon, "doctor").stdout.splitlines()
    assert all(line[:1] in ("✓", "✗") for line in text)
    assert proc.returncode == (0 if all(c["ok"] for c in checks.values()) else 1)


# ---- two users ----------------------------------------------------------------------------------

@pytest.fixture
def as_nobody(daemon: Daemon, workdir: Path) -> object:
    def run(*args: str) -> tuple[int, str, str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"}
        return run_as(NOBODY, ["--socket", daemon.socket, *args], str(workdir), env)

    return run


def test_another_user_cannot_touch_roots_job(daemon: Daemon, workdir: Path, as_nobody: object) -> None:
    run = as_nobody
    assert callable(run)
    job = cli(daemon, "submit", "--", "sleep", "30", cwd=workdir).stdout.strip()
    try:
        code, _, err = run("cancel", job)
        assert code == 4, err
        assert err.startswith("fikitctl: not permitted") and len(err.strip().splitlines()) == 1
        code, _, err = run("logs", job)
        assert code == 4, err
        code, _, err = run("profiles", "rm", "anything")
        assert code == 4, err
        assert wait_state(daemon, job, {"running"})["state"] in ("queued", "running")
    finally:
        cli(daemon, "cancel", job)


def test_a_user_runs_and_sees_own_jobs(daemon: Daemon, workdir: Path, as_nobody: object) -> None:
    run = as_nobody
    assert callable(run)
    code, out, err = run("submit", "--wait", "--", "id", "-u")
    assert code == 0, err
    job = out.strip()
    assert cli(daemon, "logs", job).stdout == f"{NOBODY}\n"  # root may read everyone's logs
    code, out, err = run("jobs", "--all", "--json")
    assert code == 0, err
    mine = json.loads(out)
    assert job in [str(j["id"]) for j in mine]
    assert {j["uid"] for j in mine} == {NOBODY}


# ---- the live view in a real terminal -----------------------------------------------------------

@pytest.fixture
def gpu_job(daemon: Daemon, workdir: Path, fake_build: Any) -> Iterator[str]:
    """A low-priority job that keeps launching on the fake driver, so top has a client row."""
    args = [str(fake_build.client), "-n", "400000", "--sleep-us", "50", "--sync", "stream"]
    proc = cli(daemon, "submit", "--prio", "low", "--name", "fakegpu", "--", *args, cwd=workdir,
               LD_LIBRARY_PATH=str(fake_build.fake_dir), FIKIT_PROG="fakegpu")
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        clients = json.loads(cli(daemon, "status", "--json").stdout)["clients"]
        if any(str(c.get("job")) == job for c in clients):
            break
        time.sleep(0.2)
    else:
        logs = cli(daemon, "logs", job)
        raise AssertionError(f"the job never registered: {logs.stdout} {logs.stderr}\n{daemon.proc.log()}")
    yield job
    cli(daemon, "cancel", job)


def test_top_once_shows_a_registered_client(daemon: Daemon, gpu_job: str) -> None:
    snap = json.loads(cli(daemon, "top", "--json", "--interval", "0.5").stdout)
    rows = [c for g in snap["gpus"] for c in g["clients"] if c["job"] == gpu_job]
    assert len(rows) == 1, snap
    row = rows[0]
    assert (row["prog"], row["prio"]) == ("fakegpu", 2)
    assert row["state"] in ("running", "held", "filling", "idle")
    assert row["kernels_per_s"] is not None and row["kernels_per_s"] > 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_top_live_in_tmux(daemon: Daemon, workdir: Path, gpu_job: str, quit_key: str) -> None:
    server = f"fikitctl-test-{os.getpid()}"
    status = workdir / "top.status"
    stty = workdir / "stty.after"
    env = daemon.env(TERM="xterm-256color")
    # `trap : INT`: the shell outlives a Ctrl-C aimed at top (its child still gets the default)
    command = " ".join([
        "trap : INT;",
        "env", *(f"{k}={_q(v)}" for k, v in env.items() if k in ("PYTHONPATH", "FIKIT_CONFIG")),
        "TERM=xterm-256color", _q(sys.executable), "-m", "fikitctl", "--socket", _q(daemon.socket),
        "top", "--interval", "0.3", ";", "echo", "$?", ">", _q(str(status) + ".tmp"), ";",
        "stty", "-a", ">", _q(str(stty)), ";", "mv", _q(str(status) + ".tmp"), _q(str(status)),
    ])
    tmux = ["tmux", "-L", server, "-f", "/dev/null"]
    try:
        subprocess.run([*tmux, "new-session", "-d", "-x", "90", "-y", "30", "sh", "-c", command],
                       check=True, env=env)
        screen = _wait_screen(tmux, "fakegpu")
        assert "q quit" in screen and "sort prio" in screen
        header = next(line for line in screen.splitlines() if "PID" in line).split()
        assert header[:2] == ["PID", "USER"] and "STATE" in header
        row = next(line for line in screen.splitlines() if "fakegpu" in line).split()
        assert row[header.index("JOB")] == gpu_job and row[header.index("PRIO")] == "low"
        assert row[header.index("STATE")] in ("running", "held", "filling", "idle")
        assert screen.splitlines()[2].startswith("GPU 0")
        subprocess.run([*tmux, "send-keys", "s"], check=True)
        _wait_screen(tmux, "sort kps")
        subprocess.run([*tmux, "send-keys", "p"], check=True)
        _wait_screen(tmux, "PAUSED")
        subprocess.run([*tmux, "send-keys", quit_key], check=True)
        deadline = time.monotonic() + 10
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.read_text().strip() == "0"
        modes = stty.read_text().split()
        assert "icanon" in modes and "echo" in modes  # the terminal is back in line mode
        alive = subprocess.run([*tmux, "has-session"], capture_output=True, check=False)
        assert alive.returncode != 0  # the pane's process ended, and with it the session
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, check=False)


def test_top_without_a_terminal_prints_frames(daemon: Daemon) -> None:
    """TERM=dumb or a pipe: frames one after another, no escape sequences."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fikitctl", "--socket", daemon.socket, "top", "--interval", "0.2"],
        env=daemon.env(TERM="dumb"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        frames = 0
        lines = []
        while frames < 2:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            lines.append(line)
            frames += line.startswith("fikit top")
    finally:
        proc.terminate()
        proc.wait(10)
    assert not any("\x1b" in line for line in lines)


def test_run_registers_with_the_daemon_and_passes_the_exit_code(daemon: Daemon, workdir: Path,
                                                                fake_build: Any) -> None:
    args = [str(fake_build.client), "-n", "20000", "--sleep-us", "100", "--sync", "stream"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fikitctl", "--socket", daemon.socket, "run", "--prio", "high",
         "--name", "runprog", "--", *args],
        env=daemon.env(LD_LIBRARY_PATH=str(fake_build.fake_dir)), cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not seen:
            clients = json.loads(cli(daemon, "status", "--json").stdout)["clients"]
            seen = [c for c in clients if c.get("pid") == proc.pid]
            time.sleep(0.1)
        assert seen, f"fikitctl run's process never registered\n{daemon.proc.log()}"
        assert (seen[0]["prog"], seen[0]["prio"]) == ("runprog", 0)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == -15, err  # the same process (exec), so the signal shows through


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _wait_screen(tmux: list[str], needle: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True,
                                check=False).stdout
        if needle in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared; the pane shows:\n{screen}")
