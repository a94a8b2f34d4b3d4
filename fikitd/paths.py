"""Where fikit's files live by default; shared by the daemon and the CLI.

Kept free of daemon imports so that ``fikitctl`` can use it on a host without fikitd.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/fikit/fikit.toml")
DEFAULT_RUNTIME_DIR = Path("/run/fikit")
DEFAULT_STATE_DIR = Path("/var/lib/fikit")
DEFAULT_LOG_DIR = Path("/var/log/fikit")
SOCKET_NAME = "fikitd.sock"


def libfikit_path() -> Path:
    """The interposition library handed to jobs; ``FIKIT_LIBRARY`` overrides the wheel's copy."""
    override = os.environ.get("FIKIT_LIBRARY")
    if override:
        return Path(override)
    return Path(__file__).parent / "_lib" / "libfikit.so"


def config_path() -> Path:
    """``FIKIT_CONFIG`` lets tests and users point at another file without a flag."""
    return Path(os.environ.get("FIKIT_CONFIG") or DEFAULT_CONFIG)


def socket_path(runtime_dir: Path | None = None) -> Path:
    """The daemon socket: ``FIKIT_SOCKET`` if set (as libfikit.so reads it), else under the runtime dir."""
    if runtime_dir is None:
        env = os.environ.get("FIKIT_SOCKET")
        if env:
            return Path(env)
        runtime_dir = DEFAULT_RUNTIME_DIR
    return runtime_dir / SOCKET_NAME


def domain_dir(runtime_dir: Path, gpu: int) -> Path:
    """One scheduling domain per GPU, as docs/design.md lays out."""
    return runtime_dir / f"gpu{gpu}"
