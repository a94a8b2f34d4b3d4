"""``fikitctl simulate TRACE.json``: replay a kernel trace through fikit's own policy.

The simulation loop and the policy both live in libfikit.so (interpose/src/
sim.c calls the policy the library calls), so what this shows is what the
library does; this module only validates the trace, hands it over through
ctypes, and reports.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fikitd.paths import libfikit_path

MODES = {"fikit": 0, "strict": 1, "off": 2}
PRIOS = {"high": 0, "normal": 1, "low": 2}


class TraceError(Exception):
    """A trace that cannot be simulated, said with where in the file."""


class _Kernel(ctypes.Structure):
    _fields_ = [
        ("dur_ns", ctypes.c_uint64),
        ("gap_ns", ctypes.c_uint64),
        ("id", ctypes.c_uint64),
        ("sm_pct", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _Client(ctypes.Structure):
    _fields_ = [
        ("prio", ctypes.c_int32),
        ("n_kernels", ctypes.c_uint32),
        ("repeat", ctypes.c_uint64),
        ("kernels", ctypes.POINTER(_Kernel)),
    ]


class _Result(ctypes.Structure):
    _fields_ = [
        ("jct_ns", ctypes.c_uint64),
        ("kernels_done", ctypes.c_uint64),
        ("gpu_ns", ctypes.c_uint64),
        ("held_ns", ctypes.c_uint64),
        ("released_gap", ctypes.c_uint64),
        ("released_idle", ctypes.c_uint64),
        ("released_corun", ctypes.c_uint64),
        ("released_guard", ctypes.c_uint64),
    ]


class _Params(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_uint32),
        ("budget_ns", ctypes.c_uint64),
        ("idle_ns", ctypes.c_uint64),
        ("unknown_ns", ctypes.c_uint64),
        ("min_lp_share_pm", ctypes.c_uint32),
        ("corun_sm_pct", ctypes.c_uint32),
    ]


@dataclass
class TraceClient:
    name: str
    prio: int
    repeat: int
    kernels: list[tuple[str, float, float, int]]  # name, dur_us, gap_us, sm_pct


def _num(v: Any, where: str, minimum: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        raise TraceError(f"{where}: expected a number >= {minimum:g}, found {json.dumps(v)}")
    return float(v)


def parse_trace(text: str, source: str = "trace") -> list[TraceClient]:
    """Validate a trace; every error names the client and kernel it is about."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"{source}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list) or not doc["clients"]:
        raise TraceError(f'{source}: expected {{"clients": [...]}} with at least one client')
    if len(doc["clients"]) > 64:
        raise TraceError(f"{source}: at most 64 clients, found {len(doc['clients'])}")
    out = []
    for ci, c in enumerate(doc["clients"]):
        where = f"{source}: clients[{ci}]"
        if not isinstance(c, dict):
            raise TraceError(f"{where}: expected an object")
        unknown = set(c) - {"name", "prio", "repeat", "kernels"}
        if unknown:
            raise TraceError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        name = str(c.get("name", f"client{ci}"))
        prio_v = c.get("prio", "normal")
        if isinstance(prio_v, str) and prio_v in PRIOS:
            prio = PRIOS[prio_v]
        elif isinstance(prio_v, int) and not isinstance(prio_v, bool) and 0 <= prio_v <= 7:
            prio = prio_v
        else:
            raise TraceError(f"{where} ({name}).prio: expected high, normal, low or 0..7, found {prio_v!r}")
        repeat = int(_num(c.get("repeat", 1), f"{where} ({name}).repeat", 1))
        ks = c.get("kernels")
        if not isinstance(ks, list) or not ks:
            raise TraceError(f"{where} ({name}).kernels: expected a non-empty list")
        kernels = []
        for ki, k in enumerate(ks):
            kw = f"{where} ({name}).kernels[{ki}]"
            if not isinstance(k, dict):
                raise TraceError(f"{kw}: expected an object")
            unknown = set(k) - {"name", "dur_us", "gap_us", "sm_pct"}
            if unknown:
                raise TraceError(f"{kw}: unknown key {sorted(unknown)[0]!r}")
            sm = int(_num(k.get("sm_pct", 100), f"{kw}.sm_pct", 1))
            if sm > 100:
                raise TraceError(f"{kw}.sm_pct: expected 1..100, found {sm}")
            kernels.append(
                (
                    str(k.get("name", f"k{ki}")),
                    _num(k.get("dur_us"), f"{kw}.dur_us"),
                    _num(k.get("gap_us", 0), f"{kw}.gap_us"),
                    sm,
                )
            )
        out.append(TraceClient(name, prio, repeat, kernels))
    return out


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(libfikit_path()))
    lib.fikit_sim_run.restype = ctypes.c_int
    lib.fikit_sim_run.argtypes = [
        ctypes.POINTER(_Client),
        ctypes.c_int,
        ctypes.POINTER(_Params),
        ctypes.c_int,
        ctypes.POINTER(_Result),
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_uint64),
    ]
    return lib


def _kernel_id(client: str, name: str) -> int:
    # Stable, nonzero, distinct per client and kernel name: the simulator's kernel ids.
    import hashlib

    h = int.from_bytes(hashlib.blake2b(f"{client}\0{name}".encode(), digest_size=8).digest(), "little")
    return h or 1


def _run(clients: list[TraceClient], params: _Params, warm: bool) -> tuple[list[_Result], float, int]:
    lib = _lib()
    keep: list[Any] = []
    arr = (_Client * len(clients))()
    for i, c in enumerate(clients):
        ks = (_Kernel * len(c.kernels))()
        for j, (name, dur, gap, sm) in enumerate(c.kernels):
            ks[j] = _Kernel(int(dur * 1000), int(gap * 1000), _kernel_id(c.name, name), sm, 0)
        keep.append(ks)
        arr[i] = _Client(c.prio, len(c.kernels), c.repeat, ctypes.cast(ks, ctypes.POINTER(_Kernel)))
    res = (_Result * len(clients))()
    fill = ctypes.c_uint64(0)
    end = ctypes.c_uint64(0)
    rc = lib.fikit_sim_run(
        arr, len(clients), ctypes.byref(params), int(warm), res, ctypes.byref(fill), ctypes.byref(end)
    )
    if rc != 0:
        raise TraceError(
            f"the simulator stopped with code {rc} (a trace that never ends, or too many kernels)"
        )
    return list(res), fill.value / 1e6, end.value


def simulate(
    clients: list[TraceClient],
    mode: str = "fikit",
    budget_us: int = 50,
    idle_us: int = 500,
    unknown_us: int = 1000,
    min_lp_share: float = 0.0,
    corun_sm_pct: int = 0,
    cold: bool = False,
) -> dict[str, Any]:
    """Run the trace in `mode`, and each client alone for its solo time.

    Clients start knowing their kernels (as fikitd's stored profiles give them) unless `cold`.
    """
    params = _Params(
        MODES[mode],
        budget_us * 1000,
        idle_us * 1000,
        unknown_us * 1000,
        int(min_lp_share * 1000),
        corun_sm_pct,
    )
    results, fill, end = _run(clients, params, not cold)
    lowest = max(c.prio for c in clients)
    single_level = all(c.prio == lowest for c in clients)
    out = []
    for c, r in zip(clients, results, strict=True):
        solo, _, solo_end = _run([c], params, not cold)
        solo_jct = solo[0].jct_ns or solo_end
        total = c.repeat * len(c.kernels)
        if r.jct_ns:
            jct: float | None = r.jct_ns / 1000
            slowdown = r.jct_ns / solo_jct if solo_jct else None
        else:
            # Cut off when the clients above finished: compare time per kernel.
            jct = None
            slowdown = (end / r.kernels_done) / (solo_jct / total) if r.kernels_done and solo_jct else None
        out.append(
            {
                "name": c.name,
                "prio": c.prio,
                "jct_us": jct,
                "solo_jct_us": solo_jct / 1000,
                "slowdown": slowdown,
                "kernels_done": r.kernels_done,
                "kernels_total": total,
                "held_us": r.held_ns / 1000,
                "released": {
                    "gap": r.released_gap,
                    "idle": r.released_idle,
                    "corun": r.released_corun,
                    "guard": r.released_guard,
                },
            }
        )
    return {"mode": mode, "clients": out, "fill": None if single_level else fill, "end_us": end / 1000}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("simulate", help="replay a kernel trace through fikit's policy")
    p.add_argument("trace", type=Path, help="trace JSON ({'clients': [...]}, see fikitctl(1))")
    p.add_argument("--mode", choices=list(MODES), default="fikit")
    p.add_argument("--budget-us", type=int, default=50, help="most an HP launch may wait for LP work")
    p.add_argument("--idle-us", type=int, default=500, help="quiet past prediction before HP counts as idle")
    p.add_argument("--unknown-us", type=int, default=1000, help="assumed length of a never-measured kernel")
    p.add_argument("--min-lp-share", type=float, default=0.0, help="starvation guard, 0..1 (0 = off)")
    p.add_argument("--corun-sm-pct", type=int, default=0, help="LP SM share beside busy HP (0 = no co-run)")
    p.add_argument("--cold", action="store_true", help="clients start with no stored kernel profile")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.trace).read_text()
    except OSError as e:
        print(f"fikitctl: cannot read {args.trace}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        if not 0.0 <= args.min_lp_share <= 1.0:
            raise TraceError("--min-lp-share must be between 0 and 1")
        clients = parse_trace(text, str(args.trace))
        res = simulate(
            clients,
            args.mode,
            args.budget_us,
            args.idle_us,
            args.unknown_us,
            args.min_lp_share,
            args.corun_sm_pct,
            args.cold,
        )
    except TraceError as e:
        print(f"fikitctl: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fikitctl: cannot load libfikit.so ({e}): reinstall fikit", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"mode {res['mode']}   fill {'-' if res['fill'] is None else format(res['fill'], '.1%')}")
    print(f"{'client':16} {'prio':>4} {'jct_us':>12} {'solo_us':>12} {'slowdown':>9} {'kernels':>16}")
    for c in res["clients"]:
        jct = "-" if c["jct_us"] is None else f"{c['jct_us']:.0f}"
        sd = "-" if c["slowdown"] is None else f"{c['slowdown']:.3f}"
        print(
            f"{c['name'][:16]:16} {c['prio']:>4} {jct:>12} {c['solo_jct_us']:>12.0f} {sd:>9} "
            f"{c['kernels_done']:>7}/{c['kernels_total']:<8}"
        )
    return 0
