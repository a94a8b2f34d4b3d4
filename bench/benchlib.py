"""Helpers shared by the bench scripts (runner side only: workers never import fikit)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import json
import math
import mmap
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The modes a pair runs in, in report order (issue 9's keys, then the co-running variants).
MODES = ["solo", "solo_preload", "timeslice", "mps", "mps_prio", "mps_prio_smcap", "fikit_strict", "fikit"]
CORUN_MODE = "fikit_corun"
SOLO_MPS_MODE = "solo_mps"  # HP and LP each alone as MPS clients: MPS's own cost

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


# ---------------------------------------------------------------------------------------------- statistics


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (q in [0, 1]); None for an empty input."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    frac = pos - lo
    return float(xs[lo] * (1.0 - frac) + xs[hi] * frac)


def median(values: Iterable[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return quantile(xs, 0.5)


def spread(values: Iterable[float | None]) -> list[float] | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    return [min(xs), max(xs)]


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den


def rnd(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation coefficient; None with fewer than 3 pairs or no spread on a side."""
    n = len(xs)
    if n < 3 or len(ys) != n:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


# ---------------------------------------------------------------------------------------------- environment


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit measured: $FIKIT_COMMIT when the caller says (the device's copy of the tree may
    carry a .git of an older HEAD: seen on 2026-11-25, a run of e88ddbb reported cb21859-dirty)."""
    env = os.environ.get("FIKIT_COMMIT")
    if env:
        return env
    if (REPO_ROOT / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                head = out.stdout.strip()
                dirty = subprocess.run(
                    ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                return head + ("-dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def _smi_rows(fields: str) -> list[list[str]]:
    """nvidia-smi --query-gpu=FIELDS as rows of stripped cells; [] without nvidia-smi (read-only)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        res = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [[c.strip() for c in line.split(",")] for line in res.stdout.strip().splitlines() if line.strip()]


def nvidia_smi_query() -> dict[str, str | None]:
    """Driver version and GPU name of the first GPU (read-only query; never changes settings)."""
    rows = _smi_rows("driver_version,name")
    if rows and len(rows[0]) >= 2:
        return {"driver": rows[0][0], "gpu_smi": ",".join(rows[0][1:])}
    return {"driver": None, "gpu_smi": None}


def gpus_smi() -> list[dict[str, Any]]:
    """Every GPU as nvidia-smi lists it: index (NVML's), name, uuid, PCI bus id; [] without nvidia-smi."""
    return [{"index": int(r[0]), "name": r[1], "uuid": r[2], "bus_id": r[3] if len(r) > 3 else None}
            for r in _smi_rows("index,name,uuid,pci.bus_id") if len(r) >= 3 and r[0].isdigit()]


def gpu_name_via_child(device: str) -> str | None:
    """torch.cuda.get_device_name(0), asked of a child so the runner never holds a CUDA context."""
    if device != "cuda":
        return "cpu"
    code = "import torch; print(torch.cuda.get_device_name(0))"
    try:
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
        if res.returncode == 0:
            return res.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return None


def env_info(device: str) -> dict[str, Any]:
    smi = nvidia_smi_query()
    gpu = gpu_name_via_child(device)
    return {
        "date": now_iso(),
        "gpu": gpu or smi.get("gpu_smi"),
        "driver": smi.get("driver"),
        "commit": git_commit(),
        "host_cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


# ---------------------------------------------------------------------------------------------- files


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def packed_copy(path: Path) -> Path:
    """Where bench/pack_results.py leaves a result file packed, and where its readers look."""
    return path.with_name(path.name + ".gz")


def jsonl_lines(path: Path) -> Iterator[tuple[Path, int, str]]:
    """(file, line number, line) of a JSON-lines file: its packed copy first, then path itself,
    so a folder packed and then appended to reads whole."""
    for source, opener in ((packed_copy(path), gzip.open), (path, open)):
        if source.exists():
            with opener(source, "rt", encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    yield source, n, line


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for _, _, line in jsonl_lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a killed run: ignore it
    return rows


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def fikitd_default_share() -> int | str:
    """fikitd's default [scheduler] corun_sm_pct, from this checkout's fikitd (not an installed one)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from fikitd.config import SchedulerConfig

    return SchedulerConfig().corun_sm_pct


def base_env() -> dict[str, str]:
    """This process's environment without anything of fikit or MPS: each mode adds its own."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("FIKIT_") or k == "LD_PRELOAD" or k.startswith("CUDA_MPS_"):
            env.pop(k)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------- cpus


def parse_cpu_list(spec: str) -> list[int]:
    """'2-3,8' -> [2, 3, 8] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            cpus.extend(range(int(a), int(b) + 1))
        else:
            cpus.append(int(part))
    return cpus


def parse_cpus(spec: str) -> list[int]:
    """'2-3,8' -> [2, 3, 8]; keeps only CPUs this process may use."""
    cpus = parse_cpu_list(spec)
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return cpus
    return [c for c in cpus if c in allowed]


def popen_logged(argv: Sequence[str], log: Path, append: bool = False, **kw: Any) -> subprocess.Popen[bytes]:
    """Start argv with stdin closed and stdout and stderr into log (appended to, or new); raises
    OSError as Popen does. The log is closed here: the child keeps its own descriptor."""
    with log.open("ab" if append else "wb") as f:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, **kw
        )


def pin_preexec(cpus: list[int]) -> Any:
    """A preexec_fn that pins the child to cpus (no-op if empty)."""

    def _pin() -> None:
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(cpus))

    return _pin


def pin_all_threads(cpus: Iterable[int]) -> int:
    """Pin every thread of this process to cpus; returns how many threads were pinned.

    Why: os.sched_setaffinity(0, ...) pins the calling thread only; threads started before it
    keep their old mask (new threads inherit the mask of the thread that starts them)."""
    want = set(cpus)
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), want)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        n += 1
    return n


@contextlib.contextmanager
def thread_affinity(cpus: Iterable[int]) -> Iterator[None]:
    """The calling thread on cpus for the block, then back: what it starts meanwhile inherits them."""
    old = os.sched_getaffinity(0)
    want = set(cpus)
    if want:
        os.sched_setaffinity(0, want)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# ---------------------------------------------------------------------------------------------- topology


@dataclass
class Topology:
    """The CPUs a plan may hand out, as /sys describes them.

    cores: each physical core as (NUMA node, its logical CPUs), in the order roles take them: by
    node, then by first CPU, except that the core of CPU 0 comes last in its node (the kernel keeps
    housekeeping there: some interrupts and timers), so it goes to the LPs."""

    cores: list[tuple[int, list[int]]]
    smt: bool  # the host's cores have several threads (allowed to us or not)

    def nodes(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for node, cpus in self.cores:
            out.setdefault(node, []).extend(cpus)
        return {n: sorted(c) for n, c in sorted(out.items())}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_topology(root: str | Path = "/", allowed: Iterable[int] | None = None) -> Topology:
    """Physical cores and NUMA nodes of the online CPUs (only those in allowed, when given).

    Siblings come from thread_siblings_list, else (physical_package_id, core_id); a node from
    /sys/devices/system/node/node*/cpulist, else 0. Without /sys every allowed CPU is a core of
    its own on node 0."""
    sysd = Path(root) / "sys" / "devices" / "system"
    keep = None if allowed is None else set(allowed)
    node_of: dict[int, int] = {}
    for nd in sysd.glob("node/node[0-9]*"):
        if nd.name[4:].isdigit():
            for c in parse_cpu_list(_read(nd / "cpulist") or ""):
                node_of[c] = int(nd.name[4:])
    groups: dict[tuple[Any, ...], list[int]] = {}
    smt = False
    for d in sysd.glob("cpu/cpu[0-9]*"):
        if not d.name[3:].isdigit() or _read(d / "online") == "0":
            continue
        cpu = int(d.name[3:])
        if keep is not None and cpu not in keep:
            continue
        topo = d / "topology"
        sib = parse_cpu_list(_read(topo / "thread_siblings_list") or "")
        smt = smt or len(sib) > 1
        core_id = _read(topo / "core_id")
        if sib:
            key: tuple[Any, ...] = ("siblings", *sorted(sib))
        elif core_id is not None:
            key = ("core", _read(topo / "physical_package_id") or "0", core_id)
        else:
            key = ("cpu", cpu)
        groups.setdefault(key, []).append(cpu)
    if not groups:
        fallback = sorted(keep) if keep is not None else list(range(os.cpu_count() or 1))
        groups = {("cpu", c): [c] for c in fallback}
    cores = [(node_of.get(min(cpus), 0), sorted(cpus)) for cpus in groups.values()]
    cores.sort(key=lambda c: (c[0], 0 in c[1], c[1][0]))
    return Topology(cores=cores, smt=smt or any(len(cpus) > 1 for _, cpus in cores))


def gpu_numa_node(bus_id: str | None, root: str | Path = "/") -> int | None:
    """The NUMA node of a GPU from its PCI bus id, as nvidia-smi prints it ('00000000:18:00.0';
    sysfs says '0000:18:00.0'); None where unknown (no bus id, no file, or -1)."""
    parts = (bus_id or "").strip().lower().split(":")
    if len(parts) != 3:
        return None
    try:
        name = f"{int(parts[0], 16):04x}:{parts[1]}:{parts[2]}"
        node = int(_read(Path(root) / "sys" / "bus" / "pci" / "devices" / name / "numa_node") or "-1")
    except ValueError:
        return None
    return node if node >= 0 else None


def plan_cores(
    hps: dict[str, str | None],
    lps: Sequence[str],
    hp_cores: int = 2,
    service_cores: int = 2,
    canary: bool = True,
    root: str | Path = "/",
    allowed: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Disjoint logical CPUs per role: {"cpus": {role: [cpu]}, "topology": {...}, "notes": [...]}.

    hps: each HP role and its GPU's PCI bus id (None: unknown); lps: the LP roles.
    Why: an HP at batch 1 is bound by the host thread that launches its kernels, so anything on
    its core slows it, a busy hyperthread sibling included. Each HP gets hp_cores physical cores
    on its GPU's NUMA node (where it can), one thread of each, the other thread left to nobody;
    `service` (the harness, fikitd, the MPS daemons, fikitctl) gets service_cores whole cores (0:
    no such role); `canary` (Canary) one thread of a core of its own; the LPs split what is left
    evenly. With too few cores the plan gives up, in turn, the service's second core, the HPs'
    second cores and the canary; then LPs share their CPUs, and last every role shares every
    CPU. notes says which."""
    topo = cpu_topology(root, allowed)
    gpu_nodes = {k: gpu_numa_node(b, root) for k, b in hps.items()}
    one_hp, one_svc = min(hp_cores, 1), min(service_cores, 1)
    tries = [(hp_cores, service_cores, canary), (hp_cores, one_svc, canary), (one_hp, one_svc, canary),
             (one_hp, one_svc, False)]  # fmt: skip
    need = [len(hps) * h + s + int(c) + int(bool(lps)) for h, s, c in tries]
    fit = next((t for t, n in zip(tries, need, strict=True) if n <= len(topo.cores)), None)
    report = {
        "smt": topo.smt,
        "nodes": {str(n): c for n, c in topo.nodes().items()},
        "gpu_nodes": gpu_nodes,
        "physical_cores": len(topo.cores),
    }
    roles = [*hps, *(["service"] if service_cores else []), *(["canary"] if canary else []), *lps]
    if fit is None:
        every = sorted(c for _, cpus in topo.cores for c in cpus)
        cpus = {k: ([] if k == "canary" else every) for k in roles}
        note = f"physical cores: {len(topo.cores)}, {need[-1]} needed: every role shares every CPU"
        return {"cpus": cpus, "topology": report, "notes": [note + (", no canary" if canary else "")]}
    n_hp, n_svc, with_canary = fit
    notes = [] if fit == tries[0] else [
        f"physical cores: {len(topo.cores)}, {need[0]} wanted: each HP {n_hp}, service {n_svc}, "
        f"{'a' if with_canary else 'no'} canary"
    ]  # fmt: skip
    free = list(topo.cores)

    def take(n: int, node: int | None) -> list[list[int]]:
        """n whole cores, on one node while it has free ones: node, else the one with the most."""
        got: list[list[int]] = []
        while len(got) < n and free:
            count = {nd: sum(1 for f, _ in free if f == nd) for nd, _ in free}
            if node not in count:
                node = max(count, key=lambda nd: (count[nd], -nd))
            got.append(free.pop(next(i for i, (nd, _) in enumerate(free) if nd == node))[1])
        return got

    out: dict[str, list[int]] = {}
    node_of = {c: nd for nd, cpus in topo.cores for c in cpus}
    for k, node in gpu_nodes.items():
        out[k] = sorted(core[0] for core in take(n_hp, node))  # one thread a core; its sibling idle
        if node is not None and any(node_of[c] != node for c in out[k]):
            notes.append(f"{k}: its GPU is on node {node}, CPUs {out[k]} are not all there")
    if service_cores:
        out["service"] = sorted(c for core in take(n_svc, None) for c in core)
    if canary:
        out["canary"] = [core[0] for core in take(1, None)] if with_canary else []
    pool = [c for _, cpus in sorted(free, key=lambda f: (f[0], f[1][0])) for c in cpus]
    if len(pool) >= len(lps):
        at = 0
        for j, k in enumerate(lps):
            n = len(pool) // len(lps) + (j < len(pool) % len(lps))
            out[k], at = sorted(pool[at : at + n]), at + n
    else:
        out.update({k: sorted(pool) for k in lps})
        notes.append(f"the LPs share CPUs {sorted(pool)}")
    return {"cpus": out, "topology": report, "notes": notes}


# ---------------------------------------------------------------------------------------------- libfikit


def find_lib(explicit: str | None) -> str | None:
    """libfikit.so: --lib, else $FIKIT_LIB, else the usual build places."""
    cands: list[Path] = []
    if explicit:
        return str(Path(explicit).resolve())
    if os.environ.get("FIKIT_LIB"):
        return str(Path(os.environ["FIKIT_LIB"]).resolve())
    for pat in ("build/**/libfikit.so", "interpose/build/**/libfikit.so", "interpose/**/libfikit.so"):
        cands.extend(REPO_ROOT.glob(pat))
    cands = [c for c in cands if c.is_file()]
    if cands:
        cands.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return str(cands[0].resolve())
    return None


def build_launch_loop(dest: Path) -> tuple[str | None, str | None]:
    """bench/launch_loop.c built in dest: (its path, None), or (None, why not)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None, "no C compiler"
    exe = dest / "launch_loop"
    res = subprocess.run(
        [cc, "-O2", "-o", str(exe), str(BENCH_DIR / "launch_loop.c"), "-ldl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if res.returncode != 0:
        return None, res.stderr[-800:]
    return str(exe), None


def _import_shm(lib: str | None) -> Any:
    """fikitd.shm (it asks libfikit.so for the layout, so FIKIT_LIBRARY must name the library)."""
    if lib:
        os.environ["FIKIT_LIBRARY"] = lib
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    from fikitd import shm

    return shm


def create_domain(
    path: Path, lib: str | None, mode: str = "fikit", budget_us: int | None = None, corun_sm_pct: int = 0
) -> Any:
    """A self-granted scheduling domain (no daemon), as tests and `fikitctl run` without fikitd use."""
    shm = _import_shm(lib)
    kw: dict[str, Any] = {"mode": mode, "self_grant": True}
    if budget_us is not None:
        kw["budget_us"] = budget_us
    if corun_sm_pct:
        kw["corun_sm_pct"] = corun_sm_pct
    dom = shm.Domain.create(path, 0, **kw)
    _KEEP_DOMAINS.append(dom)
    return dom


_KEEP_DOMAINS: list[Any] = []  # keep the runner's mappings alive for its lifetime


class FillProbe:
    """Reads a domain's slots to give, per window, the share of HP idle-gap time LP work filled."""

    def __init__(self, path: Path, lib: str | None) -> None:
        self.path = path
        self.lib = lib
        self.dom: Any = None
        self.error: str | None = None

    def _open(self) -> bool:
        if self.dom is not None:
            return True
        try:
            shm = _import_shm(self.lib)
            self.dom = shm.Domain.open(self.path)
            return True
        except Exception as e:
            self.error = repr(e)
            return False

    def read(self, pid: int) -> dict[str, float] | None:
        """HP's counters (the slot owned by pid), with filled_ns summed over the other slots.

        The library counts filled time on the LP side (an LP slot's GPU time run in a more urgent
        client's idle time) and idle gaps on the HP side, so the fill needs both."""
        if not self._open():
            return None
        try:
            hp: dict[str, float] | None = None
            filled = 0.0
            for i in self.dom.slot_indices():
                s = self.dom.slot(i)
                if not s:
                    continue
                if int(s.get("pid", 0)) == pid:
                    keys = ("idle_gap_ns", "gpu_ns", "launches", "held_launches", "held_ns", "released_corun")
                    hp = {k: float(s.get(k, 0)) for k in keys}
                else:
                    filled += float(s.get("filled_ns", 0))
            if hp is not None:
                hp["filled_ns"] = filled
            return hp
        except Exception as e:
            self.error = repr(e)
        return None


class ClockSampler:
    """A GPU's SM clock and utilisation (NVML index, 0 by default) every 50 ms while a window runs.

    Why: a batch-1 HP alone leaves the GPU mostly idle, and its latency moves with the clock the
    GPU settles at (seen on the H100: solo BERT p50 4.5 or 7-8 ms from one window to the next), so
    each row says what clock it ran at."""

    def __init__(self, period_s: float = 0.05, index: int = 0) -> None:
        self.period_s = period_s
        self.handle: Any = None
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            self.handle = None

    @classmethod
    def off(cls) -> ClockSampler:
        """One that records nothing (CPU runs, dry runs)."""
        c = cls.__new__(cls)
        c.period_s, c.handle, c.nvml = 0.05, None, None
        return c

    @contextlib.contextmanager
    def window(self) -> Iterator[dict[str, Any]]:
        """Yields a dict filled, when the block ends, with the window's clock and utilisation."""
        out: dict[str, Any] = {}
        if self.handle is None:
            yield out
            return
        clocks: list[float] = []
        utils: list[float] = []
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    nv = self.nvml
                    clocks.append(float(nv.nvmlDeviceGetClockInfo(self.handle, nv.NVML_CLOCK_SM)))
                    utils.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
                stop.wait(self.period_s)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            yield out
        finally:
            stop.set()
            t.join(1.0)
            if clocks:
                out.update(sm_mhz_mean=rnd(sum(clocks) / len(clocks)), sm_mhz_min=min(clocks),
                           sm_mhz_max=max(clocks), util_pct_mean=rnd(sum(utils) / max(1, len(utils))))


def cpu_ticks(cpus: Sequence[int]) -> tuple[int, int, int] | None:
    """(total, busy, steal) jiffies of these CPUs so far, from /proc/stat; None where unreadable."""
    want = {f"cpu{c}" for c in cpus}
    total = busy = steal = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    seen = 0
    for ln in lines:
        f = ln.split()
        if not f or f[0] not in want:
            continue
        # user nice system idle iowait irq softirq steal
        v = [int(x) for x in f[1:9]] + [0] * max(0, 8 - len(f[1:9]))
        total += sum(v)
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7]
        seen += 1
    return (total, busy, steal) if seen else None


@contextlib.contextmanager
def cpu_window(cpus: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Yields a dict filled, when the block ends, with how busy these CPUs were and how much time
    the hypervisor stole from them (percent of their time in the window).

    Why: an HP at batch 1 is bound by its host thread, and on a shared host whole windows ran
    1.5-2x slower than their neighbours with nothing of ours changed (2026-11-25-2xh200-run3);
    a window whose HP cores were stolen from, or shared, says so in its row."""
    out: dict[str, Any] = {}
    a = cpu_ticks(cpus)
    try:
        yield out
    finally:
        b = cpu_ticks(cpus)
        if a and b and b[0] > a[0]:
            t = b[0] - a[0]
            out.update(busy_pct=rnd(100.0 * (b[1] - a[1]) / t, 1))
            out.update(steal_pct=rnd(100.0 * (b[2] - a[2]) / t, 1))


CANARY_UNIT = 10_000  # iterations of the canary's loop a unit of work: about 1 ms of CPython


def canary_loop(path: str, cpu: int) -> None:
    """The canary's body (Canary starts it in a child): on cpu, a fixed pure-Python loop forever,
    the count of units done published as 8 bytes, little-endian, at the start of path."""
    os.sched_setaffinity(0, {cpu})
    parent = os.getppid()
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8)
    n, x = 0, 1
    while True:
        for _ in range(CANARY_UNIT):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        n += 1
        struct.pack_into("<Q", mm, 0, n)
        if n % 1000 == 0 and os.getppid() != parent:
            return  # the harness is gone without stopping it


class Canary:
    """A CPU-speed probe: a child on a CPU of its own (plan_cores leaves its sibling idle) doing
    the same pure-CPU work all run long; window() gives its rate of work over a block.

    Why: whole windows ran 1.5-2.4x slower than their neighbours, in every mode, often on both
    GPUs at once, with no steal and steady GPU clocks (2026-11-25-2xh200-run4). An HP at batch 1
    is bound by its launch thread, so a host that runs code slower gives a slower HP; a probe that
    does fixed work beside every window, whatever its mode, says how fast the host ran code then,
    so a slow window can be told from a slow mode. It keeps one core busy in every mode alike."""

    def __init__(self, cpu: int | None, path: Path) -> None:
        self.cpu = cpu
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self.mm: mmap.mmap | None = None
        self.error: str | None = None

    def start(self, timeout: float = 10.0) -> bool:
        """Start it and wait for its first unit; False (and .error) where it cannot run."""
        if self.cpu is None:
            self.error = "no CPU of its own to run on"
            return False
        self.path.write_bytes(bytes(8))
        with self.path.open("r+b") as f:
            self.mm = mmap.mmap(f.fileno(), 8)
        code = (f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import benchlib; "
                "benchlib.canary_loop(sys.argv[1], int(sys.argv[2]))")  # fmt: skip
        try:
            self.proc = popen_logged([sys.executable, "-c", code, str(self.path), str(self.cpu)],
                                     self.path.with_suffix(".log"))
        except OSError as e:
            self.error = f"cannot start: {e!r}"
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None and not self.read():
            time.sleep(0.05)
        if not self.read() or self.proc.poll() is not None:
            tail = _read(self.path.with_suffix(".log")) or ""
            self.error = f"no work counted within {timeout:.0f}s (exit {self.proc.poll()}): {tail[-500:]}"
            self.stop()
            return False
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read(self) -> int | None:
        """Units done so far; None when not running. Read until two reads agree (no torn value)."""
        if self.mm is None:
            return None
        a = struct.unpack_from("<Q", self.mm, 0)[0]
        while (b := struct.unpack_from("<Q", self.mm, 0)[0]) != a:
            a = b
        return int(a)

    @contextlib.contextmanager
    def window(self) -> Iterator[dict[str, Any]]:
        """Yields a dict filled, when the block ends, with `rate`: units of work a second over it."""
        out: dict[str, Any] = {}
        a, t_a = self.read(), time.monotonic()
        try:
            yield out
        finally:
            b, t_b = self.read(), time.monotonic()
            if self.alive() and a is not None and b is not None and t_b > t_a:
                out["rate"] = rnd((b - a) / (t_b - t_a), 1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.mm is not None:
            self.mm.close()
            self.mm = None


def fill_between(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    if not before or not after:
        return None
    d_fill = after["filled_ns"] - before["filled_ns"]
    d_idle = after["idle_gap_ns"] - before["idle_gap_ns"]
    return {
        "fill": (d_fill / d_idle) if d_idle > 0 else None,  # type: ignore[dict-item]
        "hp_idle_gap_ms": d_idle / 1e6,
        "hp_filled_ms": d_fill / 1e6,
        "hp_gpu_ms": (after["gpu_ns"] - before["gpu_ns"]) / 1e6,
    }


# ---------------------------------------------------------------------------------------------- MPS


def mps_ask(
    pipe: Path, log: Path, cmd: str, timeout: float = 10.0, path: str | None = None
) -> tuple[int, str]:
    """One command to the MPS control daemon of a pipe directory: (exit status, its output);
    (-1, why) when it could not be asked."""
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    env.update({"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(log)})
    try:
        r = subprocess.run(
            ["nvidia-cuda-mps-control"],
            input=cmd + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return -1, repr(e)
    return r.returncode, (r.stdout + r.stderr).strip()



class Mps:
    """An MPS control daemon in private pipe/log directories (never touches the GPU's settings)."""

    def __init__(self, base: Path, dry_run: bool) -> None:
        self.pipe = base / "mps_pipe"
        self.log = base / "mps_log"
        self.dry_run = dry_run
        self.started = False
        self.error: str | None = None

    def env(self) -> dict[str, str]:
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe), "CUDA_MPS_LOG_DIRECTORY": str(self.log)}

    def _ctl(self, stdin: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(self.env())
        return subprocess.run(
            ["nvidia-cuda-mps-control"],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> bool:
        self.pipe.mkdir(parents=True, exist_ok=True)
        self.log.mkdir(parents=True, exist_ok=True)
        if self.dry_run:
            self.error = "dry-run: MPS skipped"
            return False
        if not shutil.which("nvidia-cuda-mps-control"):
            self.error = "nvidia-cuda-mps-control not on PATH"
            return False
        env = dict(os.environ)
        env.update(self.env())
        try:
            res = subprocess.run(
                ["nvidia-cuda-mps-control", "-d"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as e:
            self.error = f"mps start: {e!r}"
            return False
        if res.returncode != 0:
            self.error = f"mps start rc={res.returncode}: {res.stderr.strip()[:300]}"
            return False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                r = self._ctl("get_default_client_priority\n", timeout=5)
                if r.returncode == 0:
                    self.started = True
                    return True
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        self.error = "mps control daemon did not answer"
        self.started = True  # it may still be up: stop() will try
        return False

    def stop(self) -> None:
        if not self.started or self.dry_run:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._ctl("quit\n", timeout=20)
        self.started = False

    def server_log_tail(self, n: int = 20) -> str:
        p = self.log / "server.log"
        try:
            return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
