"""``fikitd --install-system`` / ``--uninstall-system``: put the shipped files where a host reads them.

What a distribution package would install, for hosts that got fikit from pip: the systemd
unit (with ExecStart pointing at this installation), the example configuration (never over
an existing one: it is the operator's) and the man pages.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Item:
    source: str  # relative to the data root
    target: str  # relative to the prefix
    keep_existing: bool = False


ITEMS = (
    Item("systemd/fikitd.service", "etc/systemd/system/fikitd.service"),
    Item("etc/fikit.toml", "etc/fikit/fikit.toml", keep_existing=True),
    Item("man/fikitd.8", "usr/local/share/man/man8/fikitd.8"),
    Item("man/fikit.toml.5", "usr/local/share/man/man5/fikit.toml.5"),
)


def data_root() -> Path:
    """The shipped files: packaged beside the module (wheel) or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for root in (here / "_data", here.parent):
        if (root / "systemd" / "fikitd.service").is_file():
            return root
    raise FileNotFoundError("cannot find the shipped files (systemd/, etc/, man/) of this fikit installation")


def exec_start() -> str:
    """The command systemd should run: the console script beside this Python, or ``python -m``."""
    script = Path(sys.executable).parent / "fikitd"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    found = shutil.which("fikitd")
    return found if found else f"{sys.executable} -m fikitd.main"


def _content(root: Path, item: Item) -> bytes:
    data = (root / item.source).read_bytes()
    if item.source.endswith(".service"):
        lines = data.decode().splitlines()
        lines = [f"ExecStart={exec_start()}" if ln.startswith("ExecStart=") else ln for ln in lines]
        data = ("\n".join(lines) + "\n").encode()
    return data


def run(prefix: Path, *, uninstall: bool = False, dry_run: bool = False) -> int:
    try:
        root = data_root()
    except FileNotFoundError as exc:
        print(f"fikitd: {exc}", file=sys.stderr)
        return 1
    for item in ITEMS:
        target = prefix / item.target
        content = _content(root, item)
        if uninstall:
            if not target.exists():
                continue
            if item.keep_existing and target.read_bytes() != content:
                print(f"keep    {target} (changed from the example: yours)")
                continue
            print(f"remove  {target}")
            if not dry_run:
                target.unlink()
            continue
        if target.exists() and item.keep_existing:
            print(f"keep    {target} (exists)")
            continue
        print(f"install {target}")
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(content)
            tmp.chmod(0o644)
            tmp.replace(target)
    if not dry_run and prefix == Path("/"):
        print("then: systemctl daemon-reload" + ("" if uninstall else " && systemctl enable --now fikitd"))
    return 0
