"""``fikitctl status``: is fikit working here, in a few lines a person can read at a glance.

The daemon's ``status`` reply is printed section by section; fields this fikitctl does not know
(a newer daemon) are still shown as ``key=value`` rather than dropped.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import common


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="daemon, MPS, GPUs, clients and scheduler mode",
                       description="Show fikitd's state: daemon, MPS, GPUs, clients, scheduler mode.")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    p.set_defaults(func=run)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(_scalar(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    return "-" if value is None or value == "" else str(value)


def _pairs(value: Any, first: tuple[str, ...] = ()) -> str:
    if not isinstance(value, dict):
        return _scalar(value)
    keys = [k for k in first if k in value] + [k for k in value if k not in first]
    return "  ".join(f"{k} {_scalar(value[k])}" for k in keys if not isinstance(value[k], (dict, list)))


def _gpu_line(gpu: dict[str, Any]) -> str:
    index = gpu.get("index", gpu.get("gpu", "?"))
    rest = {k: v for k, v in gpu.items() if k not in ("index", "gpu", "clients")}
    return f"GPU {index}: " + _pairs(rest, ("name", "uuid", "util_pct", "mode"))


def _client_line(client: dict[str, Any]) -> str:
    head = [str(client.get("pid", "?")), str(client.get("user") or client.get("uid") or "-"),
            str(client.get("prog") or "-"), common.prio_label(client.get("prio"))]
    job = client.get("job")
    if job not in (None, ""):
        head.append(f"job {job}")
    state = client.get("state")
    if state is not None:
        head.append(str(state))
    return " ".join(head)


def format_status(result: dict[str, Any], socket: str) -> str:
    lines = []
    daemon = result.get("daemon")
    lines.append(f"daemon:    {_pairs(daemon, ('version', 'pid', 'uptime_s'))}  socket {socket}")
    lines.append(f"MPS:       {_pairs(result.get('mps'), ('state', 'mode'))}")
    lines.append(f"scheduler: {_pairs(result.get('scheduler'), ('mode',))}")
    gpus = result.get("gpus") or []
    if not gpus:
        lines.append("GPUs:      none seen (NVML unavailable or no GPU)")
    for gpu in gpus:
        lines.append(_gpu_line(gpu) if isinstance(gpu, dict) else f"GPU: {_scalar(gpu)}")
    clients = result.get("clients")
    if isinstance(clients, list):
        lines.append(f"clients:   {len(clients)}")
        lines.extend(f"  {_client_line(c)}" for c in clients if isinstance(c, dict))
    else:
        lines.append(f"clients:   {_scalar(clients)}")
    shown = {"daemon", "mps", "scheduler", "gpus", "clients"}
    lines.extend(f"{k}: {_scalar(v)}" for k, v in result.items() if k not in shown)
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    with common.daemon(args) as conn:
        result = conn.call("status")
        if args.json:
            common.print_json(result)
        else:
            print(format_status(result, conn.path), end="")
    return common.EXIT_OK
