"""``fikitctl env`` and ``fikitctl run`` without a daemon."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from fikitctl import env

from .conftest import child_env, run_cli


def test_preload_goes_first_and_is_not_repeated() -> None:
    out = env.build_env(2, 1, "/s.sock", "/lib/libfikit.so", "/other.so /lib/libfikit.so:/x.so")
    assert out["LD_PRELOAD"] == "/lib/libfikit.so:/other.so:/x.so"
    assert out["FIKIT_PRIO"] == "low"
    assert out["FIKIT_SOCKET"] == "/s.sock"
    assert out["FIKIT_DOMAIN"].endswith("/gpu1")


def test_exports_are_shell_quoted() -> None:
    text = env.format_exports({"A": "it's a value", "B": "$HOME;rm -rf /"})
    values: dict[str, str] = {}
    script = text + 'printf "%s\\n%s\\n" "$A" "$B"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    values["A"], values["B"] = out.splitlines()
    assert values == {"A": "it's a value", "B": "$HOME;rm -rf /"}


def test_env_command_output_evals(tmp_path: Path) -> None:
    lib = tmp_path / "lib dir" / "libfikit.so"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    e = child_env(FIKIT_LIBRARY=str(lib), LD_PRELOAD="/pre.so", FIKIT_CONFIG=str(tmp_path / "none.toml"))
    proc = run_cli(["--socket", "/x/y.sock", "env", "--prio", "5", "--gpu", "2"], env=e)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split("=")[0] for line in lines] == [
        "export LD_PRELOAD", "export FIKIT_PRIO", "export FIKIT_SOCKET", "export FIKIT_DOMAIN"]
    assert shlex.split(lines[0]) == ["export", f"LD_PRELOAD={lib}:/pre.so"]
    assert lines[1:] == ["export FIKIT_PRIO=5", "export FIKIT_SOCKET=/x/y.sock",
                         "export FIKIT_DOMAIN=/run/fikit/gpu2"]


def test_env_without_library_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether a library is installed or built depends on the checkout; ask the same question
    # in-process, under the same environment, and check the command agrees.
    monkeypatch.setenv("FIKIT_LIBRARY", "")
    proc = run_cli(["env"], env=child_env(FIKIT_LIBRARY=""))
    if env.libfikit_path() is None:
        assert proc.returncode == 1
        assert "reinstall fikit" in proc.stderr
    else:
        assert proc.returncode == 0


def test_run_passes_exit_code_and_environment(tmp_path: Path) -> None:
    lib = tmp_path / "libfikit.so"
    lib.write_bytes(b"")  # an empty file: the loader warns and goes on, enough to see the variable
    e = child_env(FIKIT_LIBRARY=str(lib), FIKIT_CONFIG=str(tmp_path / "none.toml"))
    script = 'test "$FIKIT_PRIO" = low && test "$FIKIT_PROG" = named && exit 7'
    proc = run_cli(["run", "--prio", "low", "--name", "named", "--", "sh", "-c", script], env=e)
    assert proc.returncode == 7, proc.stderr


def test_run_passes_a_signal_through(tmp_path: Path) -> None:
    lib = tmp_path / "libfikit.so"
    lib.write_bytes(b"")
    e = child_env(FIKIT_LIBRARY=str(lib))
    proc = run_cli(["run", "--", "sh", "-c", "kill -TERM $$"], env=e)
    assert proc.returncode == -15


def test_run_unknown_command_is_127(tmp_path: Path) -> None:
    lib = tmp_path / "libfikit.so"
    lib.write_bytes(b"")
    proc = run_cli(["run", "--", "no-such-command-fikit"], env=child_env(FIKIT_LIBRARY=str(lib)))
    assert proc.returncode == 127
    assert "command not found" in proc.stderr
