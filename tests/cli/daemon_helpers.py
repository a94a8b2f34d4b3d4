"""A real fikitd for the CLI's end-to-end tests, and running fikitctl as another user.

Every directory is world-traversable (not pytest's 0700 tmp_path) so that uid 65534 can reach
the socket and run jobs in it, as an ordinary user on a shared GPU host would.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .conftest import REPO, child_env

sys.path.insert(0, str(REPO / "tests" / "fikitd"))
from daemon_fixture import DaemonProc, start_daemon

NOBODY = 65534


@dataclass
class Daemon:
    """The fikitd colleague's DaemonProc, plus what the CLI tests need to reach it."""

    base: Path
    proc: DaemonProc

    @property
    def socket(self) -> str:
        return str(self.proc.socket)

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(FIKIT_SOCKET=self.socket, FIKIT_CONFIG=str(self.proc.config), **extra)


def start(lib: Path | None) -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="fikitctl-it-"))
    os.chmod(base, 0o755)
    env = {"FIKIT_LIBRARY": str(lib)} if lib is not None else None
    proc = start_daemon(base / "fk", env=env)
    os.chmod(base / "fk", 0o755)
    try:
        yield Daemon(base, proc)
    finally:
        try:
            if proc.proc is not None:
                proc.stop()
        finally:
            proc.close()
            shutil.rmtree(base, ignore_errors=True)


def run_as(uid: int, argv: Sequence[str], cwd: str, env: dict[str, str]) -> tuple[int, str, str]:
    """fikitctl's main() in a forked child that dropped to ``uid``.

    A fork rather than exec: the interpreter here lives under a 0700 home that another user
    could not start, while the already-imported modules need no file access.
    """
    from fikitctl import main  # imported before the fork, with everything it uses

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        return _fork_run(uid, argv, cwd, env, main.main, out, err)


def _fork_run(uid: int, argv: Sequence[str], cwd: str, env: dict[str, str],
              entry: Callable[[list[str]], int], out: IO[bytes], err: IO[bytes]) -> tuple[int, str, str]:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            sys.stdout = io.TextIOWrapper(io.FileIO(os.dup(out.fileno()), "w"), write_through=True)
            sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(err.fileno()), "w"), write_through=True)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = entry(list(argv))
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return os.waitstatus_to_exitcode(status), out.read().decode(), err.read().decode()
