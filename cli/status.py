"""``fikitctl status``: is fikit working here, in a few lines a person can read at a glance.

The daemon's ``status`` reply is printed section by section; fields this fikitctl does not know
(a newer daemon) are still shown as ``key=value`` rather than dropped.
"""

from __future__ import annotations

import argparse
import time
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


def _client_line(client: dict[str, Any]) -> str:
    head = [str(client.get("pid", "?")), str(client.get("user") or client.get("uid") or "-"),
            str(client.get("prog") or "-"), common.prio_label(client.get("prio"))]
    if isinstance(client.get("gpu"), int):
        head.insert(0, f"GPU {client['gpu']}:")  # which domain, once a host has several
    job = client.get("job")
    if job not in (None, ""):
        head.append(f"job {job}")
    state = client.get("state")
    if state is not None:
        head.append(str(state))
    return " ".join(head)


def _daemon_line(daemon: Any, socket: str) -> list[str]:
    if not isinstance(daemon, dict):
        return [f"daemon:    {_scalar(daemon)}  socket {socket}"]
    parts = [f"fikitd {daemon.get('version', '?')}"]
    if daemon.get("pid"):
        parts.append(f"pid {daemon['pid']}")
    if isinstance(daemon.get("uptime_s"), (int, float)):
        parts.append(f"up {common.fmt_duration(float(daemon['uptime_s']))}")
    parts.append(f"socket {daemon.get('socket') or socket}")
    if daemon.get("jobs_running") is not None:
        parts.append(f"{daemon['jobs_running']} job(s) running")
    lines = ["daemon:    " + ", ".join(parts)]
    if daemon.get("nvidia") is False and daemon.get("nvidia_reason"):
        lines.append(f"           {daemon['nvidia_reason']}")
    return lines


def _mps_line(mps: Any) -> str:
    if not isinstance(mps, dict):
        return f"MPS:       {_scalar(mps)}"
    text = str(mps.get("state") or "?")
    detail = [f"mode {mps['mode']}"] if mps.get("mode") else []
    if mps.get("reason"):
        detail.append(str(mps["reason"]))
    if mps.get("restarts"):
        detail.append(f"{mps['restarts']} restart(s)")
    if mps.get("server_deaths"):
        detail.append(f"{mps['server_deaths']} server(s) died under jobs")
    line = f"MPS:       {text}" + (f" ({'; '.join(detail)})" if detail else "")
    events = mps.get("events")
    if isinstance(events, list) and events and isinstance(events[-1], dict):
        last = events[-1]
        when = time.strftime("%H:%M:%S", time.localtime(float(last.get("time") or 0)))
        line += f"\n           last event {when}: {last.get('event')}"
    return line


def _scheduler_line(sched: Any) -> str:
    if not isinstance(sched, dict):
        return f"scheduler: {_scalar(sched)}"
    detail = [f"{k} {_scalar(sched[k])}" for k in ("budget_us", "idle_us", "unknown_us", "corun_sm_pct",
                                                 "min_lp_share") if k in sched]
    by_gpu = sched.get("by_gpu")
    if isinstance(by_gpu, dict) and by_gpu:
        detail.append("by GPU " + ", ".join(f"{g}:{m}" for g, m in by_gpu.items()))
    return f"scheduler: {sched.get('mode', '?')}" + (f" ({', '.join(detail)})" if detail else "")


def _gpu_line(gpu: dict[str, Any], clients: int | None = None) -> str:
    index = gpu.get("index", gpu.get("gpu", "?"))
    parts = [str(gpu.get("name") or "?")]
    if gpu.get("uuid"):
        parts.append(str(gpu["uuid"]))  # what CUDA_VISIBLE_DEVICES may name
    if clients is not None:
        parts.append(f"{clients} client(s)")
    if isinstance(gpu.get("util_pct"), (int, float)):
        parts.append(f"util {gpu['util_pct']}%")
    used, total = gpu.get("mem_used"), gpu.get("mem_total")
    if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total:
        parts.append(f"mem {used / 2**30:.1f}/{total / 2**30:.1f} GiB")
    dom = gpu.get("domain")
    if isinstance(dom, dict):
        if dom.get("available"):
            parts.append(f"domain {dom.get('path', '')} mode {dom.get('mode', '?')}".replace("  ", " "))
        else:
            parts.append(f"no domain ({dom.get('reason', '?')})")
    return f"GPU {index}:     " + ", ".join(parts)


def format_status(result: dict[str, Any], socket: str) -> str:
    lines = _daemon_line(result.get("daemon"), socket)
    lines.append(_mps_line(result.get("mps")))
    lines.append(_scheduler_line(result.get("scheduler")))
    gpus = result.get("gpus") or []
    clients = result.get("clients")
    per_gpu: dict[Any, int] | None = None
    if isinstance(clients, list):
        per_gpu = {}
        for cl in clients:
            if isinstance(cl, dict):
                per_gpu[cl.get("gpu")] = per_gpu.get(cl.get("gpu"), 0) + 1
    if not gpus:
        lines.append("GPUs:      none seen (NVML unavailable or no GPU)")
    for gpu in gpus:
        if not isinstance(gpu, dict):
            lines.append(f"GPU:       {_scalar(gpu)}")
            continue
        count = None if per_gpu is None else per_gpu.get(gpu.get("index", gpu.get("gpu")), 0)
        lines.append(_gpu_line(gpu, count))
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
