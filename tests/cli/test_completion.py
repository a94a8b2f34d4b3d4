"""Completion scripts parse in their shells and complete from the real parser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import run_cli


def script(shell: str) -> str:
    proc = run_cli(["completion", shell])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_bash_script_parses() -> None:
    subprocess.run(["bash", "-n"], input=script("bash"), text=True, check=True)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n"], input=script("zsh"), text=True, check=True)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_script_parses(tmp_path: Path) -> None:
    path = tmp_path / "fikitctl.fish"
    path.write_text(script("fish"))
    subprocess.run(["fish", "--no-execute", str(path)], check=True)


def complete(tmp_path: Path, words: list[str]) -> list[str]:
    """Ask the generated bash function for candidates, as bash would at the last word."""
    path = tmp_path / "fikitctl.bash"
    path.write_text(script("bash"))
    array = " ".join(f"'{w}'" for w in words)
    driver = (f"source {path}\nCOMP_WORDS=({array})\nCOMP_CWORD={len(words) - 1}\n"
              "_fikitctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    return sorted(line for line in out.splitlines() if line)


def test_bash_completes_commands_options_and_choices(tmp_path: Path) -> None:
    assert complete(tmp_path, ["fikitctl", "su"]) == ["submit"]
    assert "top" in complete(tmp_path, ["fikitctl", ""])
    assert "--wait" in complete(tmp_path, ["fikitctl", "submit", "--w"])
    assert complete(tmp_path, ["fikitctl", "submit", "--prio", ""]) == ["high", "low", "normal"]
    assert complete(tmp_path, ["fikitctl", "jobs", "--state", "c"]) == ["cancelled"]
    assert complete(tmp_path, ["fikitctl", "--socket", "/x", "profiles", "e"]) == ["export"]
    assert complete(tmp_path, ["fikitctl", "profiles", "export", "--c"]) == ["--csv"]
    assert complete(tmp_path, ["fikitctl", "completion", ""]) == ["bash", "fish", "zsh"]


def test_new_options_appear_without_editing_completion() -> None:
    from fikitctl import completion, main

    parser = main.build_parser()
    node = completion.describe(parser)
    flags = {f for o in node.commands["top"][1].options for f in o.flags}
    assert {"--once", "--json", "--interval", "--sort"} <= flags
