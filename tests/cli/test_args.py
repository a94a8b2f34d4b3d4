"""Argument parsing and the exit-code contract, without a daemon."""

from __future__ import annotations

import argparse

import pytest
from fikitctl import common, jobs, main

from .conftest import child_env, run_cli


@pytest.mark.parametrize(
    ("text", "level"), [("high", 0), ("normal", 1), ("low", 2), ("LOW", 2), ("0", 0), ("7", 7)]
)
def test_prio_accepts_names_and_levels(text: str, level: int) -> None:
    assert common.parse_prio(text) == level


@pytest.mark.parametrize("text", ["urgent", "8", "-1", "", "1.5"])
def test_prio_rejects_the_rest(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        common.parse_prio(text)


def test_submit_parses_script_and_command() -> None:
    parser = main.build_parser()
    args = parser.parse_args(["submit", "--prio", "low", "--name", "n", "job.sh"])
    assert (args.prio, args.name, args.command) == (2, "n", ["job.sh"])
    args = parser.parse_args(["submit", "--wait", "--", "python3", "-c", "print(1)", "--json"])
    assert args.wait and args.command[-4:] == ["python3", "-c", "print(1)", "--json"]
    assert not args.json  # options after -- belong to the command


def test_submit_request_for_a_command_keeps_argv(tmp_path: object) -> None:
    req = jobs.submit_request(["--", "echo", "hi"], "/work", {"A": "1"})
    assert req == {"argv": ["echo", "hi"], "cwd": "/work", "env": {"A": "1"}}


def test_submit_request_makes_a_script_absolute(tmp_path: pytest.TempPathFactory) -> None:
    import pathlib

    base = pathlib.Path(str(tmp_path))
    (base / "job.sh").write_text("echo hi\n")
    req = jobs.submit_request(["job.sh"], str(base), {})
    assert req["script"] == str(base / "job.sh")
    with pytest.raises(common.CliError) as err:
        jobs.submit_request(["missing.sh"], str(base), {})
    assert err.value.code == common.EXIT_FAILURE
    with pytest.raises(common.CliError) as err:
        jobs.submit_request(["job.sh", "arg"], str(base), {})
    assert err.value.code == common.EXIT_USAGE and "--" in err.value.message


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"state": "done", "exit_code": 0}, 0),
        ({"state": "failed", "exit_code": 3}, 3),
        ({"state": "cancelled", "exit_code": -15}, 143),
        ({"state": "lost", "exit_code": None}, 1),
        ({"state": "done", "exit_code": None}, 0),
    ],
)
def test_job_exit_code_is_what_a_shell_would_see(job: dict[str, object], code: int) -> None:
    assert jobs.job_exit_code(job) == code


def test_socket_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIKIT_SOCKET", "/env.sock")
    assert common.socket_path(argparse.Namespace(socket="/flag.sock")) == "/flag.sock"
    assert common.socket_path(argparse.Namespace(socket=None)) == "/env.sock"
    monkeypatch.delenv("FIKIT_SOCKET")
    monkeypatch.setenv("FIKIT_CONFIG", "/nonexistent/fikit.toml")
    assert common.socket_path(argparse.Namespace(socket=None)) == "/run/fikit/fikitd.sock"


def test_socket_default_follows_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import pathlib

    conf = pathlib.Path(str(tmp_path)) / "fikit.toml"
    conf.write_text('[paths]\nruntime_dir = "/srv/fikit"\n')
    monkeypatch.delenv("FIKIT_SOCKET", raising=False)
    monkeypatch.setenv("FIKIT_CONFIG", str(conf))
    assert common.socket_path(argparse.Namespace(socket=None)) == "/srv/fikit/fikitd.sock"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuchcommand"],
        ["submit", "--prio", "urgent", "x.sh"],
        ["submit", "--gpu", "x", "--", "true"],
        ["jobs", "--state", "sleeping"],
        ["top", "--interval", "zero"],
        ["completion", "tcsh"],
        ["submit"],
        ["submit", "--"],
        ["run"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    proc = run_cli(argv, env=child_env(FIKIT_SOCKET="/nonexistent/fikitd.sock"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip()


def test_version() -> None:
    proc = run_cli(["--version"])
    assert proc.returncode == 0 and proc.stdout.startswith("fikitctl ")


def test_daemon_down_exits_3_with_the_fix(tmp_path: object) -> None:
    sock = f"{tmp_path}/none.sock"
    for argv in (["jobs"], ["status"], ["top", "--once"], ["submit", "--", "true"], ["show", "1"]):
        proc = run_cli(["--socket", sock, *argv])
        assert proc.returncode == 3, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        fix = f"fikitctl: fikitd is not running (no socket at {sock}): sudo systemctl start fikitd"
        assert lines == [fix]


def test_stale_socket_says_restart(tmp_path: object) -> None:
    import socket

    path = f"{tmp_path}/stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # bound, never listening: what a crashed daemon leaves behind
    proc = run_cli(["--socket", path, "status"])
    assert proc.returncode == 3
    assert "systemctl restart fikitd" in proc.stderr


def test_every_command_has_help() -> None:
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    expected = {"env", "run", "submit", "jobs", "show", "cancel", "logs", "status", "top", "profiles",
                "simulate", "doctor", "completion"}
    assert expected <= set(sub.choices)
    for name in expected:
        assert sub.choices[name].format_help()


def test_status_text_tolerates_unknown_shapes() -> None:
    from fikitctl import status

    text = status.format_status({"daemon": "up", "mps": None, "scheduler": "fikit", "gpus": [],
                                 "clients": 3, "extra": {"a": 1}}, "/s.sock")
    assert text.splitlines() == ["daemon:    up  socket /s.sock", "MPS:       -", "scheduler: fikit",
                                 "GPUs:      none seen (NVML unavailable or no GPU)", "clients:   3",
                                 "extra: a=1"]


def test_doctor_lines_carry_the_fix() -> None:
    from fikitctl import doctor

    checks = [doctor.Check("a", True, "fine"), doctor.Check("b", False, "broken", "do this")]
    lines = doctor.format_checks(checks).splitlines()
    assert lines[0].endswith("a: fine") and lines[1].endswith("b: broken — fix: do this")
    assert not doctor.check_library("/nonexistent/libfikit.so").ok
    assert not doctor.check_preload(None).ok
