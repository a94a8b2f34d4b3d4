"""``fikitctl top``: a live view of every GPU domain and its clients.

Three layers kept apart so each is testable without a terminal: ``Snapshot`` is the data (built
from the daemon's ``snapshot`` op, with rates from two consecutive snapshots), ``render`` is a pure
function from a snapshot to a rich renderable, and ``loop`` only fetches, renders and reads keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from . import common

STATE_NAMES = {0: "idle", 1: "running", 2: "held", 3: "filling"}
STATE_STYLES = {"running": "green", "held": "yellow", "filling": "cyan", "idle": "dim"}
SORT_KEYS = ("prio", "kps", "held", "pid")


@dataclass
class ClientView:
    """One client process as top shows it; rates and shares are already computed."""

    gpu: int
    pid: int
    user: str
    job: str | None
    prog: str
    prio: int
    state: str
    launches: int
    kernels_per_s: float | None
    held_s: float
    gap_fill: float | None
    slowdown: float | None
    stride: int = 1  # launches per published prediction: more than 1 while quiet (interpose/src/quiet.c)


@dataclass
class GpuView:
    index: int
    name: str
    util_pct: float | None
    mem_used: int | None
    mem_total: int | None
    mps: str
    mode: str
    lp_sm_pct: int | None
    lp_sm_auto: bool = False  # the share is fikitd's choice (corun_sm_pct = "auto"), not pinned
    clients: list[ClientView] = field(default_factory=list)
    uuid: str = ""  # in --json, so scripts can match a GPU to CUDA_VISIBLE_DEVICES


@dataclass
class Snapshot:
    taken_at: float
    gpus: list[GpuView]

    def clients(self) -> Iterator[ClientView]:
        for gpu in self.gpus:
            yield from gpu.clients

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _pick(source: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in source and source[name] is not None:
            return source[name]
    return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _state_name(value: Any) -> str:
    if isinstance(value, int):
        return STATE_NAMES.get(value, str(value))
    return str(value or "idle")


def _seconds(client: dict[str, Any], base: str) -> float:
    """A duration under whichever unit suffix the daemon used (``held_s``, ``held_us``, ``held_ns``)."""
    for suffix, scale in (("_s", 1.0), ("_us", 1e-6), ("_ns", 1e-9)):
        value = client.get(base + suffix)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) * scale
    return 0.0


def _has(client: dict[str, Any], base: str) -> bool:
    return any(isinstance(client.get(base + suffix), (int, float)) for suffix in ("_s", "_us", "_ns"))


def _client_view(
    gpu: int, raw: dict[str, Any], previous: dict[tuple[int, int], int], dt: float
) -> ClientView:
    pid = int(raw.get("pid") or 0)
    launches = int(_pick(raw, "launches", "kernels") or 0)
    before = previous.get((gpu, pid))
    rate = (launches - before) / dt if before is not None and dt > 0 and launches >= before else None
    fill = _num(_pick(raw, "gap_fill", "filled_share"))
    if fill is None and _has(raw, "filled") and _seconds(raw, "idle_gap") > 0:
        # the lower clients' GPU time released into this client's gaps, over those gaps
        fill = min(1.0, _seconds(raw, "filled") / _seconds(raw, "idle_gap"))
    job = raw.get("job")
    return ClientView(
        gpu=gpu,
        pid=pid,
        user=str(_pick(raw, "user", "uid") if _pick(raw, "user", "uid") is not None else "-"),
        job=None if job in (None, "") else str(job),
        prog=str(raw.get("prog") or "-"),
        prio=int(_pick(raw, "prio", "granted_prio") or 0),
        state=_state_name(raw.get("state")),
        launches=launches,
        kernels_per_s=rate,
        held_s=_seconds(raw, "held"),
        gap_fill=fill,
        slowdown=_num(_pick(raw, "slowdown", "hp_slowdown")),
        stride=max(1, int(_num(raw.get("stride")) or 1)),
    )


def _memory(raw: dict[str, Any]) -> tuple[int | None, int | None]:
    mem = raw.get("memory")
    if isinstance(mem, dict):
        used, total = mem.get("used"), mem.get("total")
    else:
        used, total = _pick(raw, "mem_used", "memory_used"), _pick(raw, "mem_total", "memory_total")
    return (int(used) if isinstance(used, (int, float)) else None,
            int(total) if isinstance(total, (int, float)) else None)


def _mps_text(value: Any) -> str:
    if isinstance(value, dict):
        if value.get("mode") == "none":
            return "unused"
        return str(value.get("state") or value.get("mode") or "-")
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value not in (None, "") else "-"


def from_reply(
    result: dict[str, Any], previous: Snapshot | None = None, now: float | None = None
) -> Snapshot:
    """Build a snapshot from the ``snapshot`` op; kernels/s needs the previous snapshot's counters."""
    stamp = result.get("time")
    taken_at = now if now is not None else float(stamp) if isinstance(stamp, (int, float)) else time.time()
    counters: dict[tuple[int, int], int] = {}
    dt = 0.0
    if previous is not None:
        dt = taken_at - previous.taken_at
        counters = {(c.gpu, c.pid): c.launches for c in previous.clients()}
    gpus = []
    host_mps = _mps_text(result.get("mps"))
    for i, raw in enumerate(result.get("gpus") or []):
        picked = _pick(raw, "index", "gpu")
        index = int(picked) if isinstance(picked, (int, float)) else i  # index 0 is a real index
        used, total = _memory(raw)
        conf = raw.get("config") if isinstance(raw.get("config"), dict) else {}
        lp = _num(_pick(raw, "lp_sm_pct", "corun_sm_pct", "lp_sm_share") or conf.get("corun_sm_pct"))
        mode = _pick(raw, "mode", "scheduler") or conf.get("mode")
        if mode is None and raw.get("available") is False:
            mode = "no domain"
        gpus.append(
            GpuView(
                index=index,
                name=str(raw.get("name") or f"GPU {index}"),
                util_pct=_num(_pick(raw, "util_pct", "utilization", "util")),
                mem_used=used,
                mem_total=total,
                mps=_mps_text(raw["mps"]) if "mps" in raw else host_mps,
                mode=str(mode or "-"),
                lp_sm_pct=None if lp is None else int(lp),
                lp_sm_auto=conf.get("corun_source") == "auto",
                clients=[_client_view(index, c, counters, dt) for c in raw.get("clients") or []],
                uuid=str(raw.get("uuid") or raw.get("gpu_uuid") or ""),
            )
        )
    return Snapshot(taken_at=taken_at, gpus=gpus)


# ---- the view -----------------------------------------------------------------------------------

def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def _fmt_held(seconds: float) -> str:
    if seconds <= 0:
        return "0"
    if seconds < 10:
        return f"{seconds:.1f}s"
    return common.fmt_duration(seconds)


def _fmt_pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _fmt_slow(slow: float | None) -> str:
    """The daemon's slowdown is a ratio (1.021 = 2.1% slower than the kernels' own best)."""
    return "-" if slow is None else f"{(slow - 1) * 100:+.1f}%"


def _fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate / 1000:.1f}k" if rate >= 10000 else f"{rate:.0f}"


# Columns: header, cell, right-aligned; KEEP lists them most important first, and columns are
# dropped from the end of KEEP until the table fits the terminal.
COLUMNS: dict[str, tuple[str, bool]] = {
    "pid": ("PID", True), "user": ("USER", False), "job": ("JOB", True), "prog": ("PROG", False),
    "prio": ("PRIO", False), "state": ("STATE", False), "kps": ("K/S", True), "held": ("HELD", True),
    "fill": ("FILL", True), "slow": ("SLOW", True),
}
KEEP = ["pid", "state", "prog", "prio", "kps", "user", "held", "fill", "slow", "job"]
PROG_MAX = 20
MIN_PROG = 6


def _cells(c: ClientView) -> dict[str, str]:
    return {
        "pid": str(c.pid), "user": c.user, "job": c.job or "-", "prog": c.prog,
        "prio": common.prio_label(c.prio), "state": c.state if c.stride == 1 else f"{c.state} q{c.stride}",
        "kps": _fmt_rate(c.kernels_per_s),
        "held": _fmt_held(c.held_s), "fill": _fmt_pct(c.gap_fill), "slow": _fmt_slow(c.slowdown),
    }


def sort_clients(clients: list[ClientView], key: str) -> list[ClientView]:
    if key == "kps":
        return sorted(clients, key=lambda c: (-(c.kernels_per_s or 0.0), c.pid))
    if key == "held":
        return sorted(clients, key=lambda c: (-c.held_s, c.pid))
    if key == "pid":
        return sorted(clients, key=lambda c: c.pid)
    return sorted(clients, key=lambda c: (c.prio, c.pid))


def _fit_columns(rows: list[dict[str, str]], width: int) -> tuple[list[str], dict[str, int]]:
    widths = {k: max([len(COLUMNS[k][0])] + [len(r[k]) for r in rows]) for k in COLUMNS}
    widths["prog"] = min(widths["prog"], PROG_MAX)
    chosen = list(KEEP)

    def total() -> int:
        # two leading spaces, then one space between columns
        return 2 + sum(widths[k] for k in chosen) + (len(chosen) - 1)

    while total() > width and widths["prog"] > MIN_PROG:
        widths["prog"] -= 1
    while total() > width and len(chosen) > 2:
        chosen.pop()
    order = [k for k in COLUMNS if k in chosen]
    return order, widths


def _wrap_parts(parts: list[Text], width: int, indent: int) -> list[Text]:
    """Lay out labelled parts on as few lines as fit, breaking only between parts."""
    lines: list[Text] = []
    line = Text()
    for part in parts:
        sep = 2 if line.plain.strip() else 0
        if line.plain.strip() and len(line.plain) + sep + len(part.plain) > width:
            lines.append(line)
            line = Text(" " * indent)
            sep = 0
        if sep:
            line.append("  ")
        line.append_text(part)
    if line.plain.strip():
        lines.append(line)
    for text in lines:
        text.truncate(width, overflow="ellipsis")
    return lines


def _gpu_header(gpu: GpuView, width: int) -> list[Text]:
    parts = [Text(f"GPU {gpu.index}", style="bold"), Text(gpu.name)]
    if gpu.util_pct is not None:
        parts.append(Text(f"util {gpu.util_pct:.0f}%"))
    if gpu.mem_used is not None and gpu.mem_total:
        parts.append(Text(f"mem {_gib(gpu.mem_used)}/{_gib(gpu.mem_total)} GiB"))
    parts.append(Text(f"MPS {gpu.mps}"))
    parts.append(Text(f"mode {gpu.mode}"))
    if gpu.lp_sm_pct is not None:
        auto = " auto" if gpu.lp_sm_auto else ""
        parts.append(Text(f"LP SM {gpu.lp_sm_pct}%{auto}" if gpu.lp_sm_pct else f"co-run off{auto}"))
    return _wrap_parts(parts, width, indent=2)


def _client_table(clients: list[ClientView], width: int) -> RenderableType:
    rows = [_cells(c) for c in clients]
    order, widths = _fit_columns(rows, width)
    table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, expand=False, pad_edge=False,
                  header_style="bold")
    for key in order:
        header, right = COLUMNS[key]
        table.add_column(header, justify="right" if right else "left", no_wrap=True, overflow="ellipsis",
                         min_width=widths[key], max_width=widths[key])
    for client, row in zip(clients, rows, strict=True):
        cells = [Text(row[k], style=STATE_STYLES.get(client.state, "") if k == "state" else "")
                 for k in order]
        table.add_row(*cells)
    return Padding(table, (0, 0, 0, 2), expand=False)


def render(snapshot: Snapshot, width: int, sort_key: str = "prio", paused: bool = False) -> RenderableType:
    """The whole frame for a terminal ``width`` columns wide; pure, so tests can record it."""
    width = max(width, 20)
    n_clients = sum(len(g.clients) for g in snapshot.gpus)
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    title = [
        Text("fikit top", style="bold"),
        Text(f"{len(snapshot.gpus)} GPU{'s' if len(snapshot.gpus) != 1 else ''}"),
        Text(f"{n_clients} client{'s' if n_clients != 1 else ''}"),
        Text(stamp),
        Text(f"sort {sort_key}"),
    ]
    if paused:
        title.append(Text("PAUSED", style="reverse"))
    parts: list[RenderableType] = [*_wrap_parts(title, width, indent=0)]
    if not snapshot.gpus:
        parts.append(Text("no GPU domains (is fikitd configured with a GPU?)"))
    for gpu in snapshot.gpus:
        parts.append(Text(""))
        parts.extend(_gpu_header(gpu, width))
        if gpu.clients:
            parts.append(_client_table(sort_clients(gpu.clients, sort_key), width))
        else:
            parts.append(Text("  no clients", style="dim"))
    parts.append(Text(""))
    parts.extend(_wrap_parts([Text("q quit"), Text("s sort"), Text("p pause")], width, indent=0))
    return Group(*parts)


# ---- the loop -----------------------------------------------------------------------------------

class Fetcher:
    """Keeps the previous snapshot so each new one carries launch rates."""

    def __init__(self, conn: common.Daemon) -> None:
        self.conn = conn
        self.last: Snapshot | None = None

    def fetch(self) -> Snapshot:
        snap = from_reply(self.conn.call("snapshot"), self.last)
        self.last = snap
        return snap


@contextmanager
def cbreak(stream: Any) -> Iterator[int | None]:
    """Single keys without Enter; the terminal is restored however the loop ends, Ctrl-C included."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield None
        return
    if not os.isatty(fd):
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_key(fd: int | None, timeout: float) -> str | None:
    if fd is None:
        time.sleep(timeout)
        return None
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return None
    data = os.read(fd, 32)
    if not data:  # stdin closed: nothing more will come, so just keep the interval
        time.sleep(timeout)
        return None
    return data.decode(errors="replace")[-1:]


def next_sort(current: str) -> str:
    if current not in SORT_KEYS:
        return SORT_KEYS[0]
    return SORT_KEYS[(SORT_KEYS.index(current) + 1) % len(SORT_KEYS)]


def make_console() -> Console:
    # rich honours NO_COLOR and TERM=dumb itself; nothing to add here.
    return Console(highlight=False)


def loop(fetcher: Fetcher, console: Console, interval: float, sort_key: str) -> int:
    paused = False
    snap = fetcher.fetch()
    with cbreak(sys.stdin) as fd, Live(console=console, screen=True, auto_refresh=False,
                                       transient=False) as live:
        while True:
            live.update(render(snap, console.width, sort_key, paused), refresh=True)
            key = read_key(fd, interval)
            if key in ("q", "Q"):
                return common.EXIT_OK
            if key in ("s", "S"):
                sort_key = next_sort(sort_key)
            elif key in ("p", "P", " "):
                paused = not paused
            if key is None and not paused:
                snap = fetcher.fetch()


def batch(fetcher: Fetcher, console: Console, interval: float, sort_key: str) -> int:
    """Not a terminal (a pipe, TERM=dumb): print a frame per interval, like top -b."""
    while True:
        console.print(render(fetcher.fetch(), console.width, sort_key))
        console.print()
        sys.stdout.flush()
        time.sleep(interval)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "top",
        help="live view of GPUs and fikit clients",
        description="Live view of every GPU domain and its clients. Keys: q quit, s sort, p pause.",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    p.add_argument("--interval", type=_interval, default=1.0, metavar="S", help="refresh period (default 1)")
    p.add_argument("--sort", choices=SORT_KEYS, default="prio", help="initial sort (default prio)")
    p.set_defaults(func=run)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: seconds, e.g. 0.5") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"invalid interval {text!r}: use 0.05 to 3600 seconds")
    return value


def run(args: argparse.Namespace) -> int:
    with common.daemon(args) as conn:
        fetcher = Fetcher(conn)
        if args.once or args.json:
            # Two samples a short while apart, so kernels/s is filled in for scripts too.
            fetcher.fetch()
            time.sleep(min(args.interval, 1.0))
            snap = fetcher.fetch()
            if args.json:
                common.print_json(snap.to_json())
            else:
                console = make_console()
                console.print(render(snap, console.width, args.sort))
            return common.EXIT_OK
        console = make_console()
        try:
            if console.is_terminal and not console.is_dumb_terminal:
                return loop(fetcher, console, args.interval, args.sort)
            return batch(fetcher, console, args.interval, args.sort)
        except KeyboardInterrupt:
            return common.EXIT_OK
