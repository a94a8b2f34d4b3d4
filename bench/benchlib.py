"""Helpers shared by the bench scripts (runner side only: workers never import fikit)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
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
    """Every GPU as nvidia-smi lists it: index (NVML's), name, uuid; [] without nvidia-smi."""
    return [{"index": int(r[0]), "name": r[1], "uuid": r[2]} for r in _smi_rows("index,name,uuid")
            if len(r) == 3 and r[0].isdigit()]


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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as f:
        for line in f:
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


def parse_cpus(spec: str) -> list[int]:
    """'2-3,8' -> [2, 3, 8]; keeps only CPUs this process may use."""
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
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return cpus
    return [c for c in cpus if c in allowed]


def pin_preexec(cpus: list[int]) -> Any:
    """A preexec_fn that pins the child to cpus (no-op if empty)."""

    def _pin() -> None:
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(cpus))

    return _pin


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
