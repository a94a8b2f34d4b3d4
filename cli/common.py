"""What every command shares: exit codes, one-line errors, the socket and the daemon call.

All daemon traffic goes through ``fikitd.protocol``; this module turns its exceptions into the exit
codes fikitctl(1) documents, so that every command fails the same way with the same fix line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_PERMITTED = 4

FALLBACK_SOCKET = "/run/fikit/fikitd.sock"
FALLBACK_RUNTIME_DIR = "/run/fikit"

PRIO_NAMES = {"high": 0, "normal": 1, "low": 2}
PRIO_MAX = 7

TERMINAL_STATES = frozenset({"done", "failed", "cancelled", "lost"})


class CliError(Exception):
    """An error a user can act on: one line, and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def die(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise CliError(message, code)


def parse_prio(text: str) -> int:
    """Accept the library's spellings (``high``/``normal``/``low`` or 0..7) so both agree."""
    value = text.strip().lower()
    if value in PRIO_NAMES:
        return PRIO_NAMES[value]
    try:
        level = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid priority {text!r}: use high, normal, low or 0..{PRIO_MAX}"
        ) from None
    if not 0 <= level <= PRIO_MAX:
        raise argparse.ArgumentTypeError(f"invalid priority {text!r}: levels run 0..{PRIO_MAX}")
    return level


def prio_label(level: Any) -> str:
    """Show a level by name where it has one, so tables read like the options users typed."""
    for name, number in PRIO_NAMES.items():
        if level == number:
            return name
    return "-" if level is None else str(level)


def parse_gpu(text: str) -> int:
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid GPU index {text!r}: use 0, 1, ...") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"invalid GPU index {text!r}: use 0, 1, ...")
    return index


def runtime_dir() -> str:
    """The runtime dir from fikit.toml (FIKIT_CONFIG, else /etc/fikit/fikit.toml), so the CLI
    finds the socket and domains wherever the administrator moved them."""
    try:
        from fikitd import config, paths
    except ImportError:
        return FALLBACK_RUNTIME_DIR
    try:
        path = paths.config_path()
        if path.exists():
            return str(config.load(path).paths.runtime_dir)
    except (config.ConfigError, OSError):
        pass
    return str(paths.DEFAULT_RUNTIME_DIR)


def default_socket() -> str:
    try:
        from fikitd import paths
    except ImportError:
        return FALLBACK_SOCKET
    return os.path.join(runtime_dir(), paths.SOCKET_NAME)


def socket_path(args: argparse.Namespace) -> str:
    """--socket, else FIKIT_SOCKET, else the configured default: the order fikitctl(1) promises."""
    explicit = getattr(args, "socket", None)
    if explicit:
        return str(explicit)
    return os.environ.get("FIKIT_SOCKET") or default_socket()


def unreachable_message(path: str) -> str:
    """Say why the socket can't be used, with the command that fixes it."""
    if not os.path.exists(path):
        return f"fikitd is not running (no socket at {path}): sudo systemctl start fikitd"
    if not os.access(path, os.R_OK | os.W_OK):
        return (
            f"no permission to use the fikitd socket {path}: "
            "ask an administrator to add you to the socket's group"
        )
    return f"fikitd is not answering on {path} (stale socket?): sudo systemctl restart fikitd"


def error_exit_code(code: str) -> int:
    return EXIT_NOT_PERMITTED if code == "not_permitted" else EXIT_FAILURE


class Daemon:
    """One connection to fikitd for the life of a command, with errors already mapped."""

    def __init__(self, path: str) -> None:
        from fikitd.protocol import Client, DaemonUnreachable

        self.path = path
        try:
            self._client = Client(path).connect()
        except (DaemonUnreachable, OSError):
            die(unreachable_message(path), EXIT_UNREACHABLE)

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        from fikitd.protocol import DaemonError, DaemonUnreachable

        try:
            result = self._client.call(op, **kwargs)
        except DaemonUnreachable:
            die(unreachable_message(self.path), EXIT_UNREACHABLE)
        except DaemonError as exc:
            die(_daemon_error_text(op, exc.code, exc.message), error_exit_code(exc.code))
        except OSError:
            die(unreachable_message(self.path), EXIT_UNREACHABLE)
        return result if isinstance(result, dict) else {"value": result}

    def close(self) -> None:
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()


def _daemon_error_text(op: str, code: str, message: str) -> str:
    if code == "not_permitted":
        return f"not permitted: {message}"
    if code == "unsupported_version":
        return f"fikitd speaks another protocol version ({message}): upgrade fikit so both match"
    return message or f"{op} failed ({code})"


@contextmanager
def daemon(args: argparse.Namespace) -> Iterator[Daemon]:
    conn = Daemon(socket_path(args))
    try:
        yield conn
    finally:
        conn.close()


def fmt_time(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)) or epoch <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def fmt_duration(seconds: float) -> str:
    """Compact ages for narrow tables: 45s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def warn(message: str) -> None:
    print(f"fikitctl: {message}", file=sys.stderr)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns: grep- and awk-friendly, unlike a boxed rich table."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, sort_keys=True))
