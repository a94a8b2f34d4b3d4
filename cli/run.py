"""``fikitctl run``: a foreground command under fikit.

The process replaces fikitctl (exec), so its exit status and any killing signal reach the caller's
shell unchanged, and job control (Ctrl-Z, Ctrl-C) acts on the program itself. Registration with
the daemon is the library's business: with no daemon the preload simply fails open.
"""

from __future__ import annotations

import argparse
import os

from . import common, env


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run a command in the foreground under fikit",
        description="Run CMD with libfikit.so preloaded; exits with CMD's status.",
    )
    env.add_prio_gpu(parser)
    parser.add_argument("--name", metavar="N", help="program name for the stored profile (FIKIT_PROG)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS", help="the command")
    parser.set_defaults(func=run)


def strip_separator(command: list[str]) -> list[str]:
    return command[1:] if command and command[0] == "--" else command


def run(args: argparse.Namespace) -> int:
    argv = strip_separator(args.command)
    if not argv:
        common.die("run needs a command: fikitctl run --prio low -- CMD ARGS", common.EXIT_USAGE)
    child_env = dict(os.environ)
    child_env.update(env.fikit_environment(args))
    if args.name:
        child_env["FIKIT_PROG"] = args.name
    try:
        os.execvpe(argv[0], argv, child_env)
    except FileNotFoundError:
        common.die(f"{argv[0]}: command not found", 127)
    except PermissionError:
        common.die(f"{argv[0]}: permission denied", 126)
    except OSError as exc:
        common.die(f"{argv[0]}: {exc.strerror}", 126)
    return common.EXIT_FAILURE  # not reached: exec either replaced us or raised
