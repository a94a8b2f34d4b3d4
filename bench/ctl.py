"""The runner's side of bench/worker.py: start workers, warm them up, run timed windows.

Each worker gets its own listening Unix socket; a reader thread turns its lines into a queue, so
the runner waits on several workers at once without select loops. Workers are started in their
own session and stopped by pid (quit message, then SIGTERM/SIGKILL to that session only).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import benchlib

WORKER = str(benchlib.BENCH_DIR / "worker.py")
Spans = Sequence[tuple[float, float]]  # [start, end) on CLOCK_MONOTONIC (or offsets from a start), apart


class WorkerError(Exception):
    pass


class WorkerProc:
    """One worker process and its control connection."""

    def __init__(self, tag: str, model: str, role: str, sock_dir: Path, log_dir: Path) -> None:
        self.tag = tag
        self.model = model
        self.role = role
        self.sock_path = sock_dir / f"{tag}.sock"
        self.log_path = log_dir / f"{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.listener: socket.socket | None = None
        self.conn: socket.socket | None = None
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.built: dict[str, Any] | None = None
        self.ready: dict[str, Any] | None = None
        self.error: str | None = None
        self.bye: dict[str, Any] | None = None
        self.usage: dict[str, float] = {}  # what its last window used (worker.usage_since)
        self.t_spawn = 0.0
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- start
    def spawn(self, argv: Sequence[str], env: dict[str, str], cwd: str | None = None) -> None:
        self.sock_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(1)
        self.listener.settimeout(0.2)
        logf = self.log_path.open("ab")
        logf.write(("$ " + " ".join(argv) + "\n").encode())
        logf.flush()
        self.t_spawn = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            self.error = f"spawn failed: {e!r}"
        finally:
            logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def try_accept(self) -> bool:
        """One short accept attempt; True once connected."""
        if self.conn is not None:
            return True
        if self.listener is None or self.error:
            return False
        try:
            conn, _ = self.listener.accept()
        except TimeoutError:
            return False
        except OSError as e:
            self.error = f"accept: {e!r}"
            return False
        self.conn = conn
        self.conn.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"rd-{self.tag}", daemon=True)
        self._reader.start()
        return True

    def _read_loop(self) -> None:
        assert self.conn is not None
        buf = b""
        try:
            while True:
                chunk = self.conn.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        try:
                            self.q.put(json.loads(line))
                        except json.JSONDecodeError:
                            self.q.put({"ev": "garbage", "line": line[:200].decode(errors="replace")})
        except OSError:
            pass
        self.q.put(None)  # EOF

    def send(self, obj: dict[str, Any]) -> None:
        if self.conn is None:
            raise WorkerError(f"{self.tag}: not connected")
        try:
            self.conn.sendall((json.dumps(obj) + "\n").encode())
        except OSError as e:
            raise WorkerError(f"{self.tag}: send failed: {e!r}") from e

    def wait_event(self, ev: str, timeout: float, wid: str | None = None) -> dict[str, Any]:
        """Next message of kind ev (and id wid); raises WorkerError on death, error or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"{self.tag}: timed out after {timeout:.0f}s waiting for {ev}")
            try:
                msg = self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None and self.q.empty():
                    raise WorkerError(
                        f"{self.tag}: exited with {self.proc.returncode} waiting for {ev}; "
                        f"log {self.log_path}: {self.log_tail()}"
                    ) from None
                continue
            if msg is None:
                raise WorkerError(f"{self.tag}: connection closed waiting for {ev}; log: {self.log_tail()}")
            kind = msg.get("ev")
            if kind in ("fatal", "error"):
                raise WorkerError(f"{self.tag}: {kind}: {str(msg.get('error'))[-1500:]}")
            if kind == ev and (wid is None or str(msg.get("id")) == wid):
                return msg

    def log_tail(self, n: int = 1500) -> str:
        try:
            data = self.log_path.read_bytes()
            return data[-n:].decode(errors="replace")
        except OSError:
            return ""

    # -------------------------------------------------------------------------------------------- stop
    def stop(self, timeout: float = 15.0) -> None:
        if self.conn is not None and self.alive():
            with contextlib.suppress(WorkerError):
                self.send({"cmd": "quit"})
                with contextlib.suppress(WorkerError):
                    self.bye = self.wait_event("bye", timeout=5)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=5)
        for s in (self.conn, self.listener):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
        self.conn = None
        self.listener = None
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()

    def _signal(self, sig: int) -> None:
        """Signal this worker's own session (it was started with start_new_session)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def worker_argv(
    python: str,
    model: str,
    device: str,
    tiny: bool,
    ctl: Path,
    tag: str,
    cpus: str = "",
    rate: float = 0.0,
    warmup_s: float = 2.0,
    release_mem: bool = False,
    seed: int = 0,
    batch: int | None = None,
    devices: str = "",
    toggle_ms: float = 0.0,
    toggle_switch: str = "measuring",
) -> list[str]:
    argv = [
        python,
        WORKER,
        "--model",
        model,
        "--device",
        device,
        "--ctl",
        str(ctl),
        "--tag",
        tag,
        "--warmup-s",
        str(warmup_s),
        "--seed",
        str(seed),
    ]
    if tiny:
        argv.append("--tiny")
    if cpus:
        argv += ["--cpus", cpus]
    if rate > 0:
        argv += ["--rate", str(rate)]
    if release_mem:
        argv.append("--release-mem")
    if batch is not None:
        argv += ["--batch", str(batch)]
    if devices:
        argv += ["--devices", devices]
    if toggle_ms > 0:
        argv += ["--toggle-ms", str(toggle_ms), "--toggle-switch", toggle_switch]
    return argv


def connect_and_build(workers: Sequence[WorkerProc], timeout: float) -> None:
    """Accept every worker's connection and wait for its 'built' message; failures land in .error."""
    deadline = time.monotonic() + timeout
    pending = [w for w in workers if w.error is None]
    while pending and time.monotonic() < deadline:
        still = []
        for w in pending:
            if w.try_accept():
                continue
            if not w.alive():
                rc = w.proc.returncode if w.proc else "?"
                w.error = f"exited with {rc} before connecting: {w.log_tail()}"
                continue
            still.append(w)
        pending = still
    for w in pending:
        w.error = f"did not connect within {timeout:.0f}s: {w.log_tail()}"
    for w in workers:
        if w.error or w.conn is None:
            continue
        try:
            w.wait_event("hello", timeout=max(1.0, deadline - time.monotonic()))
            w.built = w.wait_event("built", timeout=max(1.0, deadline - time.monotonic()))
        except WorkerError as e:
            w.error = str(e)


def warm_up(
    workers: Sequence[WorkerProc], seconds: float, timeout: float, serial_roles: tuple[str, ...] = ("lp",)
) -> None:
    """Warm every worker; workers of a serial role (LP: big memory) go one at a time, beside the others."""
    ok = [w for w in workers if w.error is None and w.built is not None]
    parallel = [w for w in ok if w.role not in serial_roles]
    serial = [w for w in ok if w.role in serial_roles]
    for w in parallel:
        try:
            w.send({"cmd": "warmup", "seconds": seconds})
        except WorkerError as e:
            w.error = str(e)
    for w in serial:
        try:
            w.send({"cmd": "warmup", "seconds": seconds})
            w.ready = w.wait_event("ready", timeout=timeout)
        except WorkerError as e:
            w.error = str(e)
    for w in parallel:
        if w.error:
            continue
        try:
            w.ready = w.wait_event("ready", timeout=timeout)
        except WorkerError as e:
            w.error = str(e)


def run_window(
    workers: Sequence[WorkerProc],
    wid: str,
    duration_s: float,
    lead_s: float = 0.15,
    grace_s: float = 60.0,
    slices: Mapping[str, Spans] | None = None,
    toggles: Mapping[str, tuple[float, str]] | None = None,
) -> tuple[float, dict[str, list[list[float]]]]:
    """Start every worker's window at one CLOCK_MONOTONIC instant; return (start_at, records by tag).
    With slices (offsets from that instant, by worker tag) a worker runs only inside its own, and
    sleeps between them: the runner's schedule goes out whole, so taking turns costs no round trip.
    With toggles (by worker tag: ms, "measuring" or "library") an HP worker switches that part of
    libfikit.so off and on every ms in this window, each record marked with the state it ran in."""
    start_at = time.monotonic() + lead_s
    for w in workers:
        msg: dict[str, Any] = {"cmd": "run", "id": wid, "start_at": start_at, "duration_s": duration_s}
        if slices is not None:
            msg["slices"] = [[start_at + a, start_at + b] for a, b in slices[w.tag]]
        if toggles and w.tag in toggles:
            ms, switch = toggles[w.tag]
            msg["toggle"] = {"ms": ms, "switch": switch}
        w.send(msg)
    out: dict[str, list[list[float]]] = {}
    errors: list[str] = []
    for w in workers:
        try:
            msg = w.wait_event("done", timeout=lead_s + duration_s + grace_s, wid=wid)
            out[w.tag] = msg.get("records", [])
            w.usage = msg.get("usage") or {}
        except WorkerError as e:
            errors.append(str(e))
    if errors:
        raise WorkerError(" | ".join(errors))
    return start_at, out


def stop_all(workers: Sequence[WorkerProc]) -> None:
    threads = [threading.Thread(target=w.stop, daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)


# ------------------------------------------------------------------------------------------- statistics


def span_length(spans: Spans) -> float:
    """The seconds the spans cover (they never overlap)."""
    return sum(b - a for a, b in spans)


def hp_latencies(recs: list[list[float]], spans: Spans) -> tuple[list[float], bool]:
    """(latency in ms of each request that arrived in one of the spans, whether those overlapping
    them were taken instead): end - arrival, queueing included under Poisson."""
    lat = [(r[2] - r[0]) * 1e3 for r in recs if any(a <= r[0] < b for a, b in spans)]
    if lat:
        return lat, False
    # no request arrived inside (one request outlasted them all): take those overlapping them
    lat = [(r[2] - r[0]) * 1e3 for r in recs if any(r[0] < b and r[2] > a for a, b in spans)]
    return lat, bool(lat)


def hp_stats(recs: list[list[float]], spans: Spans) -> dict[str, Any]:
    """Latency of requests that arrived in the spans: end - arrival (includes queueing under Poisson)."""
    lat, fallback = hp_latencies(recs, spans)
    n = len(lat)
    length = span_length(spans)
    return {
        "n": n,
        "overlap_fallback": fallback,
        "p50_ms": benchlib.rnd(benchlib.quantile(lat, 0.5)),
        "p90_ms": benchlib.rnd(benchlib.quantile(lat, 0.9)),
        "p99_ms": benchlib.rnd(benchlib.quantile(lat, 0.99)),
        "mean_ms": benchlib.rnd(sum(lat) / n) if n else None,
        "max_ms": benchlib.rnd(max(lat)) if n else None,
        "rps": benchlib.rnd(n / length) if length > 0 else None,
    }


def lp_stats(recs: list[list[float]], spans: Spans, batch: int) -> dict[str, Any]:
    """Iterations per second inside the spans, counting the part of each iteration inside them."""
    work = 0.0
    whole = 0
    durs = []
    for r in recs:
        s, e = r[0], r[1]
        if e <= s:
            continue
        ov = sum(max(0.0, min(e, b) - max(s, a)) for a, b in spans)
        if ov > 0:
            work += ov / (e - s)
            durs.append((e - s) * 1e3)
            if any(s >= a and e <= b for a, b in spans):
                whole += 1
    length = span_length(spans)
    its = work / length if length > 0 else None
    return {
        "its": benchlib.rnd(its, 5),
        "samples_s": benchlib.rnd(its * batch, 3) if its is not None else None,
        "iters_whole": whole,
        "iter_ms_p50": benchlib.rnd(benchlib.quantile(durs, 0.5)),
    }
