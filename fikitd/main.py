"""``fikitd``: the console entry point."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import __version__, config, log, paths


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fikitd", description="FIKIT control plane daemon (see fikitd(8)).")
    p.add_argument("--config", type=Path,
                   help=f"configuration file (default $FIKIT_CONFIG or {paths.DEFAULT_CONFIG})")
    p.add_argument("--check-config", type=Path, metavar="PATH", help="check a configuration file and exit")
    p.add_argument("--foreground", action="store_true", default=True,
                   help="run in the foreground (the only mode; systemd Type=notify)")
    p.add_argument("--debug", action="store_true", help="log debug messages")
    p.add_argument("--version", action="version", version=f"fikitd {__version__}")
    inst = p.add_argument_group("installation")
    inst.add_argument("--install-system", action="store_true",
                      help="install the systemd unit, example config and man pages")
    inst.add_argument("--uninstall-system", action="store_true",
                      help="remove what --install-system installed")
    inst.add_argument("--prefix", type=Path, default=Path("/"), help="root to install under (default /)")
    inst.add_argument("--dry-run", action="store_true", help="with --install-system: say what would be done")
    return p


def load_config(path: Path | None) -> config.Config:
    """An explicit file must exist; the default file may be absent (then the defaults hold)."""
    if path is not None:
        return config.load(path)
    default = paths.config_path()
    return config.load(default) if default.exists() else config.Config()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logger = log.setup(10 if args.debug else 20)
    if args.install_system or args.uninstall_system:
        from . import install

        return install.run(args.prefix, uninstall=args.uninstall_system, dry_run=args.dry_run)
    if args.check_config is not None:
        try:
            config.load(args.check_config)
        except config.ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{args.check_config}: ok")
        return 0
    try:
        cfg = load_config(args.config)
    except config.ConfigError as exc:
        logger.error("configuration error, not starting:\n%s", exc)
        return 1
    from .daemon import Daemon

    async def run() -> int:
        return await Daemon(cfg).run()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
