"""fikitctl's entry point: the parser, the global options and the exit-code contract.

Each command group lives in its own module with ``add_parser(sub)`` and a ``run(args) -> int``;
this module only wires them and turns every ``CliError`` into one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__, common, completion, doctor, env, jobs, profiles, status, top
from . import run as run_cmd

EPILOG = (
    "exit status: 0 ok, 1 failure, 2 usage, 3 fikitd unreachable, 4 not permitted; "
    "submit --wait returns the job's own code. See fikitctl(1)."
)


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """simulate lives in cli/simulate.py (the scheduling work); tolerate its absence."""
    name = f"{__package__}.simulate"
    try:
        simulate = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        p = sub.add_parser("simulate", help="replay a kernel trace through the scheduling policy")
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=_no_simulate)
        return
    simulate.add_parser(sub)
    sub.choices["simulate"].set_defaults(func=simulate.run)


def _no_simulate(args: argparse.Namespace) -> int:
    common.die("simulate is not part of this build of fikitctl: upgrade fikit")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fikitctl",
        description="Control fikit: run and submit GPU jobs by priority, and watch the scheduler.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"fikitctl {__version__}")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="fikitd's socket (default: $FIKIT_SOCKET, else the configured path)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    env.add_parser(sub)
    run_cmd.add_parser(sub)
    jobs.add_parser(sub)
    status.add_parser(sub)
    top.add_parser(sub)
    profiles.add_parser(sub)
    _add_simulate(sub)
    doctor.add_parser(sub)
    completion.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        print("fikitctl: a COMMAND is needed (fikitctl --help lists them)", file=sys.stderr)
        return common.EXIT_USAGE
    try:
        code = func(args)
    except common.CliError as exc:
        print(f"fikitctl: {exc.message}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        # `fikitctl jobs | head`: the reader left; that is not an error worth a traceback.
        sys.stderr.close()
        return common.EXIT_OK
    except KeyboardInterrupt:
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
