"""fikitctl(1) is lint-clean and documents every command, exit code and variable."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest
from fikitctl import main

from .conftest import REPO

PAGE = REPO / "man" / "fikitctl.1"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_groff_lint_is_clean() -> None:
    proc = subprocess.run(["groff", "-man", "-ww", "-z", str(PAGE)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and proc.stderr == ""


def test_every_command_and_option_is_documented() -> None:
    text = PAGE.read_text().replace("\\-", "-")
    parser = main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f".SS \"fikitctl {name}" in text, name
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in text, f"{name} {flag}"
    for code in ("0", "1", "2", "3", "4"):
        assert f".B {code}\n" in text
    for var in ("FIKIT_SOCKET", "FIKIT_PRIO", "FIKIT_DOMAIN", "FIKIT_CONFIG", "FIKIT_LIBRARY", "NO_COLOR"):
        assert var in text
