"""``fikitctl env``: the environment that puts a program under fikit, as shell ``export`` lines.

Users ``eval "$(fikitctl env --prio low)"`` in a shell or a batch script, so every value is
shell-quoted and the library path is absolute: a relative path would break after a ``cd``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from . import common


def libfikit_path() -> str | None:
    """The installed libfikit.so (FIKIT_LIBRARY overrides), or None when this install has none."""
    try:
        from fikitd import paths
    except ImportError:
        return _search_libfikit()
    found = paths.libfikit_path()
    if found.is_file() or os.environ.get("FIKIT_LIBRARY"):
        return os.path.abspath(found)
    return _search_libfikit()


def _search_libfikit() -> str | None:
    # Where the wheel puts it (next to fikitd), then a source checkout's CMake build folders.
    candidates: list[Path] = []
    try:
        import fikitd

        pkg = Path(fikitd.__file__).resolve().parent
        candidates.append(pkg / "_lib" / "libfikit.so")
        candidates.extend(sorted(pkg.parent.glob("build/*/interpose/libfikit.so")))
        candidates.extend(sorted(pkg.parent.glob("build/interpose/libfikit.so")))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return None


def domain_dir(gpu: int) -> str:
    return os.path.join(common.runtime_dir(), f"gpu{gpu}")


def prio_value(level: int) -> str:
    return common.prio_label(level)


def build_env(prio: int, gpu: int, socket: str, lib: str, existing_preload: str = "") -> dict[str, str]:
    """The variables to add, in the order they are printed; pure so it can be tested directly."""
    kept = [p for p in existing_preload.replace(" ", ":").split(":") if p and p != lib]
    return {
        "LD_PRELOAD": ":".join([lib, *kept]),
        "FIKIT_PRIO": prio_value(prio),
        "FIKIT_SOCKET": socket,
        "FIKIT_DOMAIN": domain_dir(gpu),
    }


def fikit_environment(args: argparse.Namespace) -> dict[str, str]:
    lib = libfikit_path()
    if lib is None:
        common.die("libfikit.so is not installed with this fikitctl: reinstall fikit (pip install fikit)")
    return build_env(
        prio=args.prio,
        gpu=args.gpu,
        socket=common.socket_path(args),
        lib=lib,
        existing_preload=os.environ.get("LD_PRELOAD", ""),
    )


def format_exports(variables: dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())


def add_prio_gpu(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prio",
        type=common.parse_prio,
        default=common.PRIO_NAMES["normal"],
        metavar="P",
        help="high, normal, low or 0..7 (smaller is more urgent; default normal)",
    )
    parser.add_argument("--gpu", type=common.parse_gpu, default=0, metavar="I", help="GPU index (default 0)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "env",
        help="print the environment that runs a program under fikit",
        description='Print export lines; use as: eval "$(fikitctl env --prio low)"',
    )
    add_prio_gpu(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(format_exports(fikit_environment(args)), end="")
    return common.EXIT_OK
