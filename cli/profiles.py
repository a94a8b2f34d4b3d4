"""``fikitctl profiles``: the kernel measurements fikitd keeps per program.

These are what the scheduler predicts gaps from, so users inspect them when a job is held more
than expected, export them for analysis, or drop a stale profile after changing a model.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any

from . import common

KERNEL_FIELDS = ["prog", "id", "name", "count", "dur_mean_us", "dur_p50_us", "dur_p99_us",
                 "gap_mean_us", "gap_p50_us", "gap_p99_us"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profiles", help="stored kernel measurements per program",
                       description="List, show, export or remove stored kernel profiles.")
    p.add_argument("--json", action="store_true", help="JSON output (list and show)")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("list", help="programs with a stored profile")
    a.add_argument("--json", action="store_true", dest="json_action", help="JSON output")
    a = actions.add_parser("show", help="one program's kernels")
    a.add_argument("prog", metavar="PROG")
    a.add_argument("--json", action="store_true", dest="json_action", help="JSON output")
    a = actions.add_parser("export", help="every program's kernels, for analysis")
    fmt = a.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_const", const="csv", dest="format", help="CSV (default)")
    fmt.add_argument("--json", action="store_const", const="json", dest="format", help="JSON")
    a = actions.add_parser("rm", help="remove a program's profile")
    a.add_argument("prog", metavar="PROG")
    p.set_defaults(func=run, action=None)


def _stat(kernel: dict[str, Any], group: str, what: str) -> Any:
    block = kernel.get(group)
    if isinstance(block, dict):
        return block.get(what)
    return kernel.get(f"{group}_{what}")


def flat_kernel(prog: str, kernel: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: the nested dur_us/gap_us objects of the stats format, flattened."""
    row: dict[str, Any] = {"prog": prog, "id": kernel.get("id"), "name": kernel.get("name"),
                           "count": kernel.get("count")}
    for group in ("dur", "gap"):
        for what in ("mean", "p50", "p99"):
            row[f"{group}_{what}_us"] = _stat(kernel, f"{group}_us", what)
    return row


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)


def format_profiles(profiles: list[dict[str, Any]]) -> str:
    rows = [[str(p.get("prog", "?")), _num(p.get("kernels")), _num(p.get("launches")),
             common.fmt_time(p.get("updated_at"))] for p in profiles]
    return common.format_table(["PROG", "KERNELS", "LAUNCHES", "UPDATED"], rows)


def format_kernels(prog: str, kernels: list[dict[str, Any]]) -> str:
    rows = []
    for k in kernels:
        f = flat_kernel(prog, k)
        rows.append([str(f["id"] or "-"), _num(f["count"]), _num(f["dur_mean_us"]), _num(f["dur_p99_us"]),
                     _num(f["gap_mean_us"]), _num(f["gap_p50_us"]), str(f["name"] or "-")])
    return common.format_table(["ID", "COUNT", "DUR_US", "DUR_P99", "GAP_US", "GAP_P50", "NAME"], rows)


def _list(conn: common.Daemon) -> list[dict[str, Any]]:
    profiles = conn.call("profiles", action="list").get("profiles") or []
    return [p if isinstance(p, dict) else {"prog": str(p)} for p in profiles]


def _kernels(conn: common.Daemon, prog: str) -> list[dict[str, Any]]:
    return list(conn.call("profiles", action="show", prog=prog).get("kernels") or [])


def run(args: argparse.Namespace) -> int:
    action = args.action or "list"
    as_json = bool(getattr(args, "json", False) or getattr(args, "json_action", False))
    with common.daemon(args) as conn:
        if action == "list":
            profiles = _list(conn)
            if as_json:
                common.print_json(profiles)
            elif profiles:
                print(format_profiles(profiles), end="")
            else:
                print("no stored profiles (they are written when a client under fikit exits)")
        elif action == "show":
            kernels = _kernels(conn, args.prog)
            if as_json:
                common.print_json(kernels)
            else:
                print(format_kernels(args.prog, kernels), end="")
        elif action == "export":
            rows = [flat_kernel(str(p.get("prog")), k) for p in _list(conn)
                    for k in _kernels(conn, str(p.get("prog")))]
            if args.format == "json":
                common.print_json(rows)
            else:
                writer = csv.DictWriter(sys.stdout, fieldnames=KERNEL_FIELDS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        elif action == "rm":
            conn.call("profiles", action="rm", prog=args.prog)
            print(f"removed the profile of {args.prog}")
    return common.EXIT_OK
