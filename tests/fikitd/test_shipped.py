"""What a package installs: the unit (systemd-analyze), the man pages (lint) and the installer.

`systemd-analyze security --offline=yes systemd/fikitd.service` (systemd 252, Debian 12)
gives "Overall exposure level for fikitd.service: 5.6 MEDIUM"; what remains exposed and
why is listed at the end of the unit file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_fixture import REPO

UNIT = REPO / "systemd" / "fikitd.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_verifies(tmp_path: Path) -> None:
    """verify checks that ExecStart's binary exists and that the Documentation= pages resolve,
    so it runs on a copy whose ExecStart names this checkout's entry point through an existing
    interpreter, with MANPATH pointing at the man pages of this checkout."""
    text = UNIT.read_text()
    assert "Type=notify" in text and "NotifyAccess=main" in text and "WatchdogSec=30" in text
    assert "Documentation=man:fikitd(8) man:fikit.toml(5)" in text
    for key in ("RuntimeDirectory=fikit", "StateDirectory=fikit", "LogsDirectory=fikit",
                "DeviceAllow=/dev/nvidiactl rw", "DeviceAllow=/dev/nvidia-uvm rw"):
        assert key in text
    unit = tmp_path / "fikitd.service"
    unit.write_text(text.replace("ExecStart=/usr/bin/fikitd", f"ExecStart={sys.executable} -m fikitd.main"))
    manpath = tmp_path / "man"
    for section, page in (("8", "fikitd.8"), ("5", "fikit.toml.5")):
        (manpath / f"man{section}").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "man" / page, manpath / f"man{section}" / page)
    env = {"PATH": "/usr/bin:/bin", "MANPATH": str(manpath)}
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                         text=True, env=env)
    assert "Overall exposure level" in sec.stdout + sec.stderr


@pytest.mark.parametrize("page", ["fikitd.8", "fikit.toml.5"])
def test_man_pages_lint_clean(page: str) -> None:
    path = REPO / "man" / page
    if shutil.which("groff"):
        out = subprocess.run(["groff", "-man", "-ww", "-z", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stderr == "", out.stderr
    if shutil.which("mandoc"):
        out = subprocess.run(["mandoc", "-Tlint", "-Wwarning", str(path)], capture_output=True, text=True)
        assert out.stdout + out.stderr == "", out.stdout + out.stderr


def test_install_and_uninstall(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "fikitd.main", "--prefix", str(tmp_path)]
    dry = subprocess.run([*run, "--install-system", "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0 and "install" in dry.stdout and not any(tmp_path.iterdir())
    subprocess.run([*run, "--install-system"], cwd=REPO, check=True, capture_output=True)
    unit = tmp_path / "etc/systemd/system/fikitd.service"
    conf = tmp_path / "etc/fikit/fikit.toml"
    assert unit.exists() and conf.exists()
    assert (tmp_path / "usr/local/share/man/man8/fikitd.8").exists()
    assert (tmp_path / "usr/local/share/man/man5/fikit.toml.5").exists()
    exec_line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
    assert "/usr/bin/fikitd" not in exec_line or Path("/usr/bin/fikitd").exists()
    # an operator's config is never overwritten, and kept on uninstall
    conf.write_text("[scheduler]\nbudget_us = 99\n")
    again = subprocess.run([*run, "--install-system"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "keep" in again.stdout and conf.read_text().endswith("99\n")
    subprocess.run([*run, "--uninstall-system"], cwd=REPO, check=True, capture_output=True)
    assert not unit.exists() and conf.exists()
    assert not (tmp_path / "usr/local/share/man/man8/fikitd.8").exists()
