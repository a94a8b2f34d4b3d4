"""``fikitctl doctor``: check every piece fikit depends on, each with the fix when it fails.

Every check is independent and never raises, so one broken piece does not hide the others; the
output is the list an administrator works through from the top.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import common, env


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_driver() -> Check:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return Check("NVIDIA driver", False, f"libcuda.so.1 not loadable ({exc})",
                     "install the NVIDIA driver (or point LD_LIBRARY_PATH at libcuda.so.1)")
    return Check("NVIDIA driver", True, "libcuda.so.1 loads")


def check_nvml() -> Check:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except ImportError:
        return Check("NVML", False, "pynvml missing", "pip install nvidia-ml-py")
    except Exception as exc:  # pynvml raises its own NVMLError family for every failure
        return Check("NVML", False, f"NVML unavailable ({exc})",
                     "install the NVIDIA driver; check nvidia-smi works")
    return Check("NVML", True, f"driver {version}, {count} GPU{'s' if count != 1 else ''}")


def _mps_mode() -> str | None:
    try:
        from fikitd import config, paths

        path = paths.config_path()
        return config.load(path).mps.mode if path.exists() else None
    except Exception:  # an invalid config is check_config's to report
        return None


def check_mps_binaries() -> Check:
    if _mps_mode() == "none":
        return Check("MPS binaries", True, "not needed: [mps] mode = \"none\"")
    missing = [b for b in ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server") if shutil.which(b) is None]
    if missing:
        return Check("MPS binaries", False, f"not on PATH: {', '.join(missing)}",
                     "install the NVIDIA driver's utilities, or set [mps] mode = \"none\" in fikit.toml")
    return Check("MPS binaries", True, "nvidia-cuda-mps-control and nvidia-cuda-mps-server on PATH")


def check_socket_permissions(path: str) -> Check:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Check("socket permissions", False, f"no socket at {path}", "sudo systemctl start fikitd")
    except OSError as exc:
        return Check("socket permissions", False, f"{path}: {exc.strerror}",
                     "ask an administrator to let you reach the fikit runtime directory")
    if not stat.S_ISSOCK(st.st_mode):
        return Check("socket permissions", False, f"{path} is not a socket",
                     "remove it and restart fikitd: sudo systemctl restart fikitd")
    mode = stat.filemode(st.st_mode)
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("socket permissions", False, f"{path} ({mode}) is not writable by you",
                     "ask an administrator to add you to the socket's group")
    return Check("socket permissions", True, f"{path} ({mode}) usable")


def check_daemon(path: str) -> Check:
    try:
        from fikitd.protocol import Client, DaemonError, DaemonUnreachable
    except ImportError:
        return Check("daemon", False, "fikitd.protocol missing", "reinstall fikit")
    try:
        with Client(path, timeout=3.0) as client:
            hello = client.call("hello")
    except (DaemonUnreachable, DaemonError, OSError) as exc:
        return Check("daemon", False, f"no answer on {path} ({exc})", "sudo systemctl start fikitd")
    return Check("daemon", True, f"fikitd {hello.get('daemon_version', '?')} answers on {path}")


def check_config() -> Check:
    try:
        from fikitd import config, paths
    except ImportError:
        return Check("config", False, "fikitd.config missing", "reinstall fikit")
    path = paths.config_path()
    if not path.exists():
        return Check("config", True, f"{path} absent: defaults apply")
    try:
        config.load(path)
    except config.ConfigError as exc:
        first = str(exc).splitlines()[0] if str(exc) else path
        return Check("config", False, f"invalid: {first}", f"edit {path} (fikitd --check-config lists all)")
    return Check("config", True, f"{path} valid")


def check_library(lib: str | None) -> Check:
    if lib is None or not os.path.isfile(lib):
        return Check("libfikit.so", False, f"not found{f' at {lib}' if lib else ''}",
                     "reinstall fikit (pip install fikit) or set FIKIT_LIBRARY")
    try:
        ctypes.CDLL(lib)
    except OSError as exc:
        return Check("libfikit.so", False, f"{lib} does not load ({exc})", "reinstall fikit")
    return Check("libfikit.so", True, f"{lib} loads")


def check_preload(lib: str | None) -> Check:
    """A real child under LD_PRELOAD: catches a library that loads in-process but breaks exec."""
    if lib is None or not os.path.isfile(lib):
        return Check("preload test", False, "no library to preload", "reinstall fikit")
    child_env = dict(os.environ, LD_PRELOAD=lib)
    try:
        proc = subprocess.run([sys.executable, "-c", "pass"], env=child_env, capture_output=True,
                              text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("preload test", False, f"child did not run ({exc})", "reinstall fikit")
    complaint = next((line for line in proc.stderr.splitlines() if "fikit:" in line), "")
    if proc.returncode != 0 or complaint:
        why = complaint or proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        text = why if isinstance(why, str) else why[0]
        return Check("preload test", False, f"python3 under LD_PRELOAD: {text}",
                     "run with FIKIT_LOG=debug to see why; reinstall fikit")
    return Check("preload test", True, "python3 -c pass runs cleanly under LD_PRELOAD")


def run_checks(socket: str) -> list[Check]:
    lib = env.libfikit_path()
    checks: list[Callable[[], Check]] = [
        check_driver,
        check_nvml,
        check_mps_binaries,
        lambda: check_daemon(socket),
        lambda: check_socket_permissions(socket),
        check_config,
        lambda: check_library(lib),
        lambda: check_preload(lib),
    ]
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:  # a check must never hide the ones after it
            results.append(Check(getattr(check, "__name__", "check"), False, f"check crashed: {exc}"))
    return results


def marks() -> tuple[str, str]:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "✓✗".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "OK", "FAIL"
    return "✓", "✗"


def format_checks(results: list[Check]) -> str:
    good, bad = marks()
    lines = []
    for r in results:
        line = f"{good if r.ok else bad} {r.name}: {r.detail}"
        if not r.ok and r.fix:
            line += f" — fix: {r.fix}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check the driver, MPS, daemon, config and library",
                       description="Check everything fikit needs; each line is ✓ or ✗ with the fix.")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = run_checks(common.socket_path(args))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(format_checks(results), end="")
    return common.EXIT_OK if all(r.ok for r in results) else common.EXIT_FAILURE
