"""The scheduling domain's shared memory, as Python sees it.

The layout is stated once, in interpose/include/fikit_shm.h.  Rather than
restate offsets here, this module asks libfikit.so for its field table
(``fikit_layout_fields``): the compiler that built the library computed the
offsets, so C and Python cannot drift apart.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = {"fikit": 0, "strict": 1, "off": 2}
MODE_NAMES = {v: k for k, v in MODES.items()}
STATES = {0: "idle", 1: "running", 2: "held", 3: "filling"}
PRIO_NAMES = {0: "high", 1: "normal", 2: "low"}
DOMAIN_MAGIC = 0x4E4D44544B4946
SLOT_MAGIC = 0x544F4C534B4946
FLAG_SELF_GRANT = 1
PATHS = ("cuLaunchKernel", "cuLaunchKernelEx", "cuLaunchCooperativeKernel", "cuGraphLaunch")

_SCALAR = {
    "uint64_t": "Q",
    "fikit_au64": "Q",
    "uint32_t": "I",
    "fikit_au32": "I",
    "int32_t": "i",
    "fikit_ai32": "i",
}


class ShmError(Exception):
    """A domain or slot file that is missing, short or not of our layout."""


class _Desc(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("type", ctypes.c_char_p),
        ("offset", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    offset: int
    size: int
    count: int


@dataclass(frozen=True)
class Layout:
    """Every struct of the layout: name -> fields, and its size."""

    tables: dict[str, dict[str, Field]]
    sizes: dict[str, int]
    version: int
    held_bounds_s: tuple[float, ...]  # finite upper bounds of the held-time buckets; one more is +Inf

    def field(self, table: str, name: str) -> Field:
        return self.tables[table][name]


_layout: Layout | None = None


def library_path() -> Path:
    from . import paths

    return paths.libfikit_path()


def layout(lib: Path | None = None) -> Layout:
    """Read (once) the field tables libfikit.so was compiled with."""
    global _layout
    if _layout is not None and lib is None:
        return _layout
    path = lib or library_path()
    try:
        so = ctypes.CDLL(str(path))
    except OSError as e:
        raise ShmError(f"cannot load {path}: {e}") from e
    so.fikit_layout_fields.restype = ctypes.POINTER(_Desc)
    so.fikit_layout_fields.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)]
    so.fikit_layout_size.restype = ctypes.c_uint32
    so.fikit_layout_size.argtypes = [ctypes.c_char_p]
    so.fikit_layout_version.restype = ctypes.c_uint32
    tables: dict[str, dict[str, Field]] = {}
    sizes: dict[str, int] = {}
    for table in ("grant", "kstat", "domain", "slot"):
        n = ctypes.c_uint32(0)
        arr = so.fikit_layout_fields(table.encode(), ctypes.byref(n))
        fields: dict[str, Field] = {}
        for i in range(n.value):
            d = arr[i]
            name = (d.name or b"").decode()
            fields[name] = Field(name, (d.type or b"").decode(), d.offset, d.size, d.count)
        tables[table] = fields
        sizes[table] = int(so.fikit_layout_size(table.encode()))
    so.fikit_held_bucket_bounds_us.restype = ctypes.POINTER(ctypes.c_uint32)
    so.fikit_held_bucket_bounds_us.argtypes = [ctypes.POINTER(ctypes.c_uint32)]
    nb = ctypes.c_uint32(0)
    bounds = so.fikit_held_bucket_bounds_us(ctypes.byref(nb))
    # The last bucket is unbounded (+Inf); only the finite bounds are kept (JSON has no Infinity).
    held_bounds = tuple(bounds[i] / 1e6 for i in range(nb.value) if bounds[i] != 0xFFFFFFFF)
    lay = Layout(tables, sizes, int(so.fikit_layout_version()), held_bounds)
    if lib is None:
        _layout = lay
    return lay


class _View:
    """Typed access to one struct at an offset of a buffer."""

    def __init__(self, lay: Layout, table: str, buf: Any, base: int = 0) -> None:
        self._lay = lay
        self._table = table
        self._buf = buf
        self._base = base

    def get(self, name: str) -> Any:
        f = self._lay.tables[self._table][name]
        off = self._base + f.offset
        if f.ctype == "char":
            raw = bytes(self._buf[off : off + f.count])
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        code = _SCALAR.get(f.ctype)
        if code is None:
            raise ShmError(f"field {self._table}.{name} of type {f.ctype} is not a scalar")
        if f.count == 1:
            return struct.unpack_from(code, self._buf, off)[0]
        return list(struct.unpack_from(f"{f.count}{code}", self._buf, off))

    def set(self, name: str, value: Any) -> None:
        f = self._lay.tables[self._table][name]
        off = self._base + f.offset
        if f.ctype == "char":
            data = str(value).encode()[: f.count - 1]
            self._buf[off : off + f.count] = data + b"\0" * (f.count - len(data))
            return
        code = _SCALAR[f.ctype]
        if f.count == 1:
            struct.pack_into(code, self._buf, off, value)
        else:
            struct.pack_into(f"{f.count}{code}", self._buf, off, *value)

    def sub(self, name: str, index: int) -> _View:
        f = self._lay.tables[self._table][name]
        if not f.ctype.startswith("struct ") or not 0 <= index < f.count:
            raise ShmError(f"{self._table}.{name}[{index}] is not a described struct element")
        return _View(self._lay, f.ctype.split()[1], self._buf, self._base + f.offset + index * f.size)

    def scalars(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, f in self._lay.tables[self._table].items():
            if f.ctype.startswith("struct "):
                continue
            out[name] = self.get(name)
        return out


@dataclass(frozen=True)
class Grant:
    slot: int
    pid: int
    prio: int
    uid: int


def _ring_quantile(ring: list[int], n: int, q: float) -> float:
    have = sorted(ring[: min(n, len(ring))])
    if not have:
        return 0.0
    pos = q * (len(have) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(have) - 1)
    return have[lo] * (1 - (pos - lo)) + have[hi] * (pos - lo)


def _dist(n: int, total: int, ring: list[int]) -> dict[str, float] | None:
    if n == 0:
        return None
    return {
        "n": n,
        "mean": total / n / 1000.0,
        "p50": _ring_quantile(ring, n, 0.5) / 1000.0,
        "p99": _ring_quantile(ring, n, 0.99) / 1000.0,
    }


def kstat_dict(v: _View) -> dict[str, Any]:
    """One kernel-table entry in the shape FIKIT_STATS and the store use."""
    dur_n, gap_n = v.get("dur_n"), v.get("gap_n")
    return {
        "id": f"{v.get('id'):016x}",
        "name": v.get("name"),
        "kind": "graph" if v.get("kind") == 1 else "kernel",
        "count": v.get("count"),
        "grid": v.get("grid"),
        "block": v.get("block"),
        "smem": v.get("smem"),
        "dur_us": _dist(dur_n, v.get("dur_sum_ns"), v.get("dur_ring_ns")),
        "gap_us": _dist(gap_n, v.get("gap_sum_ns"), v.get("gap_ring_ns")),
        "dur_ring_ns": v.get("dur_ring_ns")[: min(dur_n, len(v.get("dur_ring_ns")))],
        "gap_ring_ns": v.get("gap_ring_ns")[: min(gap_n, len(v.get("gap_ring_ns")))],
    }


class Domain:
    """One GPU's scheduling domain directory: ``domain`` plus ``slot.<i>`` files."""

    def __init__(self, path: Path, mm: mmap.mmap, lay: Layout, writable: bool) -> None:
        self.path = path
        self._mm = mm
        self._lay = lay
        self.writable = writable
        self._hdr = _View(lay, "domain", mm)

    # -- creation and opening -------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        gpu_index: int,
        *,
        uuid: str = "",
        mode: str = "fikit",
        budget_us: int = 50,
        idle_us: int = 500,
        unknown_us: int = 1000,
        min_lp_share_pm: int = 0,
        corun_sm_pct: int = 0,
        quiet_stride: int = 32,
        quiet_gap_us: int = 100,
        self_grant: bool = False,
        n_slots: int | None = None,
    ) -> Domain:
        """Make the directory (sticky, world-writable) and a fresh domain file.

        The file is written under a temporary name and renamed, so clients
        never map a half-made header.  Self-granting domains (no daemon) are
        world-writable; daemon domains are writable by their creator only.
        """
        if mode not in MODES:
            raise ShmError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        lay = layout()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o1777)
        size = lay.sizes["domain"]
        slots = lay.field("domain", "grants").count if n_slots is None else n_slots
        if not 1 <= slots <= lay.field("domain", "grants").count:
            raise ShmError(f"n_slots must be 1..{lay.field('domain', 'grants').count}")
        buf = bytearray(size)
        v = _View(lay, "domain", buf)
        v.set("magic", DOMAIN_MAGIC)
        v.set("version", lay.version)
        v.set("domain_size", size)
        v.set("slot_size", lay.sizes["slot"])
        v.set("n_slots", slots)
        v.set("gpu_index", gpu_index)
        v.set("flags", FLAG_SELF_GRANT if self_grant else 0)
        v.set("gpu_uuid", uuid)
        v.set("mode", MODES[mode])
        v.set("budget_us", budget_us)
        v.set("idle_us", idle_us)
        v.set("unknown_us", unknown_us)
        v.set("min_lp_share_pm", min_lp_share_pm)
        v.set("corun_sm_pct", corun_sm_pct)
        v.set("quiet_stride", quiet_stride)
        v.set("quiet_gap_us", quiet_gap_us)
        v.set("generation", 1)
        tmp = path / f".domain.{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666 if self_grant else 0o644)
        try:
            os.fchmod(fd, 0o666 if self_grant else 0o644)
            os.write(fd, bytes(buf))
        finally:
            os.close(fd)
        os.replace(tmp, path / "domain")
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> Domain:
        lay = layout()
        path = Path(path)
        f = path / "domain"
        try:
            fd = os.open(f, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as e:
            raise ShmError(f"cannot open {f}: {e.strerror}") from e
        try:
            size = os.fstat(fd).st_size
            if size < lay.sizes["domain"]:
                raise ShmError(f"{f} is {size} bytes, shorter than a domain ({lay.sizes['domain']})")
            mm = mmap.mmap(
                fd,
                lay.sizes["domain"],
                mmap.MAP_SHARED,
                mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0),
            )
        finally:
            os.close(fd)
        hdr = _View(lay, "domain", mm)
        if hdr.get("magic") != DOMAIN_MAGIC or hdr.get("version") != lay.version:
            mm.close()
            raise ShmError(f"{f} is not a fikit domain of layout version {lay.version}")
        if hdr.get("domain_size") != lay.sizes["domain"] or hdr.get("slot_size") != lay.sizes["slot"]:
            mm.close()
            raise ShmError(f"{f} was made for another build of libfikit.so (struct sizes differ)")
        return cls(path, mm, lay, writable)

    def close(self) -> None:
        self._mm.close()

    # -- configuration --------------------------------------------------------
    def _need_write(self) -> None:
        if not self.writable:
            raise ShmError(f"{self.path}/domain is open read-only")

    def _bump(self) -> None:
        self._hdr.set("generation", self._hdr.get("generation") + 1)

    def set_config(self, **fields: int | str) -> None:
        """Change mode or budgets live; clients see it on their next launch."""
        self._need_write()
        allowed = {"mode", "budget_us", "idle_us", "unknown_us", "min_lp_share_pm", "corun_sm_pct",
                   "quiet_stride", "quiet_gap_us"}
        for key, value in fields.items():
            if key not in allowed:
                raise ShmError(f"{key} is not a domain setting ({', '.join(sorted(allowed))})")
            if key == "mode":
                if value not in MODES:
                    raise ShmError(f"mode {value!r} is not one of {', '.join(MODES)}")
                self._hdr.set("mode", MODES[str(value)])
            else:
                self._hdr.set(key, int(value))
        self._bump()

    def config(self) -> dict[str, int | str]:
        h = self._hdr
        return {
            "gpu_index": h.get("gpu_index"),
            "gpu_uuid": h.get("gpu_uuid"),
            "mode": MODE_NAMES.get(h.get("mode"), "?"),
            "budget_us": h.get("budget_us"),
            "idle_us": h.get("idle_us"),
            "unknown_us": h.get("unknown_us"),
            "min_lp_share_pm": h.get("min_lp_share_pm"),
            "corun_sm_pct": h.get("corun_sm_pct"),
            "quiet_stride": h.get("quiet_stride"),
            "quiet_gap_us": h.get("quiet_gap_us"),
            "n_slots": h.get("n_slots"),
            "self_grant": int(bool(h.get("flags") & FLAG_SELF_GRANT)),
            "generation": h.get("generation"),
        }

    @property
    def n_slots(self) -> int:
        return int(self._hdr.get("n_slots"))

    # -- grants ---------------------------------------------------------------
    def grant(self, slot: int, pid: int, prio: int, uid: int) -> None:
        self._need_write()
        g = self._hdr.sub("grants", slot)
        g.set("pid", 0)
        g.set("prio", prio)
        g.set("uid", uid)
        g.set("gen", g.get("gen") + 1)
        g.set("pid", pid)  # last: a reader takes pid != 0 as a complete grant
        self._bump()

    def revoke(self, slot: int) -> None:
        self._need_write()
        g = self._hdr.sub("grants", slot)
        g.set("pid", 0)
        g.set("gen", g.get("gen") + 1)
        self._bump()

    def grants(self) -> list[Grant]:
        out = []
        for i in range(self.n_slots):
            g = self._hdr.sub("grants", i)
            pid = g.get("pid")
            if pid:
                out.append(Grant(i, pid, g.get("prio"), g.get("uid")))
        return out

    def heartbeat(self) -> None:
        self._need_write()
        self._hdr.set("daemon_heartbeat_ns", time_ns())

    # -- slots ----------------------------------------------------------------
    def slot_path(self, i: int) -> Path:
        return self.path / f"slot.{i}"

    def profile_path(self, i: int) -> Path:
        return self.path / f"profile.{i}"

    def _map_slot(self, i: int) -> mmap.mmap | None:
        try:
            fd = os.open(self.slot_path(i), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size < self._lay.sizes["slot"]:
                return None
            return mmap.mmap(fd, self._lay.sizes["slot"], mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def slot_indices(self) -> Iterator[int]:
        for i in range(self.n_slots):
            if self.slot_path(i).exists():
                yield i

    def slot(self, i: int) -> dict[str, Any] | None:
        mm = self._map_slot(i)
        if mm is None:
            return None
        try:
            v = _View(self._lay, "slot", mm)
            if v.get("magic") != SLOT_MAGIC:
                return None
            d = v.scalars()
            d["state_name"] = STATES.get(d["state"], "?")
            d["path_launches"] = dict(zip(PATHS, d["path_launches"], strict=True))
            # The library counts by path only (one locked add a launch, not two).
            d["launches"] = sum(d["path_launches"].values())
            d["slot"] = i
            return d
        finally:
            mm.close()

    def slot_owner(self, i: int) -> int | None:
        try:
            return os.lstat(self.slot_path(i)).st_uid
        except OSError:
            return None

    def kernels(self, i: int) -> list[dict[str, Any]]:
        mm = self._map_slot(i)
        if mm is None:
            return []
        try:
            v = _View(self._lay, "slot", mm)
            out = []
            for k in range(self._lay.field("slot", "ktab").count):
                e = v.sub("ktab", k)
                if e.get("id") and e.get("count") + e.get("dur_n") > 0:
                    out.append(kstat_dict(e))
            return out
        finally:
            mm.close()

    def write_profile(self, i: int, kernels: list[dict[str, Any]]) -> Path:
        """Stored measurements for slot i's program, as kernel-table entries.

        Accepts what kernels() returns (and what the store keeps): id, name,
        kind, grid, block, smem and the recent duration/gap samples.
        """
        size = self._lay.sizes["kstat"]
        buf = bytearray(size * len(kernels))
        for n, k in enumerate(kernels):
            e = _View(self._lay, "kstat", buf, n * size)
            e.set("id", int(str(k["id"]), 16))
            e.set("name", k.get("name") or "")
            e.set("kind", 1 if k.get("kind") == "graph" else 0)
            e.set("grid", list(k.get("grid") or [0, 0, 0]))
            e.set("block", list(k.get("block") or [0, 0, 0]))
            e.set("smem", int(k.get("smem") or 0))
            ring = self._lay.field("kstat", "dur_ring_ns").count
            for key, nkey in (("dur_ring_ns", "dur_n"), ("gap_ring_ns", "gap_n")):
                samples = [int(x) for x in (k.get(key) or [])][:ring]
                e.set(key, samples + [0] * (ring - len(samples)))
                e.set(nkey, len(samples))
        path = self.profile_path(i)
        tmp = self.path / f".profile.{i}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, bytes(buf))
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path

    def remove_slot(self, i: int) -> None:
        for p in (self.slot_path(i), self.profile_path(i)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def snapshot(self) -> dict[str, Any]:
        """Config, grants and every slot's counters: what status, top and metrics show."""
        grants = {g.slot: g for g in self.grants()}
        clients = []
        for i in self.slot_indices():
            s = self.slot(i)
            if s is None:
                continue
            g = grants.get(i)
            clients.append(
                {
                    "slot": i,
                    "pid": s["pid"],
                    "uid": s["uid"],
                    "prog": s["prog"],
                    "prio": g.prio if g else s["prio_req"],
                    "granted": g is not None and g.pid == s["pid"],
                    "state": s["state_name"],
                    "launches": s["launches"],
                    "path_launches": s["path_launches"],
                    "held_launches": s["held_launches"],
                    "held_us": s["held_ns"] / 1000.0,
                    "held_hist": list(s["held_hist"]),
                    "released_gap": s["released_gap"],
                    "released_idle": s["released_idle"],
                    "released_guard": s["released_guard"],
                    "released_corun": s["released_corun"],
                    "gpu_us": s["gpu_ns"] / 1000.0,
                    "idle_gap_us": s["idle_gap_ns"] / 1000.0,
                    "filled_us": s["filled_ns"] / 1000.0,
                    "kernels": s["ktab_used"],
                    # launches per published prediction: 1, or quiet launches' stride (quiet.c)
                    "stride": max(1, int(s["stride"])),
                    "slowdown": slowdown_estimate(self.kernels(i)),
                }
            )
        fill = fill_ratio(clients)
        top = min((int(c["prio"]) for c in clients), default=0)
        for c in clients:
            # "share of HP gaps filled" is a property of the most urgent clients' gaps
            c["gap_fill"] = fill if int(c["prio"]) == top else None
        return {"config": self.config(), "clients": clients, "fill": fill,
                "held_bounds_s": list(self._lay.held_bounds_s)}


def slowdown_estimate(kernels: list[dict[str, Any]]) -> float | None:
    """How much longer a client's kernels run now than at their fastest recently seen.

    An estimate, not a measurement of the client's latency: a kernel slowed by
    co-running work (or queued behind it, since timing starts when the stream
    reaches it) runs longer than its own best; weighted by launches, the ratio
    of recent mean to recent minimum says how much the client is slowed on the
    GPU.  None until some kernel has two or more duration samples.
    """
    num = den = 0.0
    for k in kernels:
        ring = [x for x in k.get("dur_ring_ns") or [] if x > 0]
        if len(ring) < 2:
            continue
        w = float(k.get("count") or 1)
        num += w * sum(ring) / len(ring)
        den += w * min(ring)
    return num / den if den > 0 else None


def fill_ratio(clients: list[dict[str, Any]]) -> float | None:
    """The share of the most urgent clients' idle GPU time that less urgent ones used.

    Lower clients count the (predicted) GPU time they were let run while a more
    urgent client was present (filled_us); the most urgent clients measure
    their idle gaps (idle_gap_us).  None without both kinds of client.
    """
    if not clients:
        return None
    top = min(int(c["prio"]) for c in clients)
    idle = sum(float(c["idle_gap_us"]) for c in clients if int(c["prio"]) == top)
    filled = sum(float(c["filled_us"]) for c in clients if int(c["prio"]) > top)
    if idle <= 0 or not any(int(c["prio"]) > top for c in clients):
        return None
    return min(1.0, filled / idle)


def time_ns() -> int:
    import time

    return time.monotonic_ns()
