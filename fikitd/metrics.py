"""Prometheus metrics: the daemon's state and the domains' counters, turned into series at scrape time.

Operators watch a shared GPU host from Prometheus next to DCGM; a scheduler they cannot see
into is one they switch off.  The numbers come from ``Domains.snapshot`` -- the same read of
the shared memory that the ``snapshot`` op gives ``fikitctl top`` -- so the two views cannot
disagree about what a client did.

Why it is shaped this way:

* The HTTP server is prometheus_client's, on its own threads.  A scrape never runs on the
  asyncio loop, so a slow scraper cannot delay a reply or the watchdog.  What a scrape reads
  is cheap and needs no loop: the slot files (mapped, read, unmapped) and values the loop
  caches here (``refresh``: job counts, which need the store's connection, owned by the loop).
* Clients are aggregated by (gpu, prog, prio): a pid or a job id as a label would grow the
  series without bound.  Summing live clients alone would make a counter drop whenever one of
  them exits, which Prometheus reads as a reset and turns into a false spike; so the last
  counts seen of an exited client stay in its series while the series has live clients, and
  the series disappears with its last client.
* Nothing a client does -- exiting, being killed mid-scrape, leaving a torn slot file -- may
  fail a scrape: every domain read is guarded and a failed domain shows as ``fikit_domain_up 0``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from . import log
from .protocol import JOB_STATES, SCHED_MODES

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .daemon import Daemon

LOG = log.get("metrics")

PRIO_LEVELS = (0, 1, 2)  # always exported by fikit_clients, so a dashboard's series exist at 0
REFRESH_S = 1.0
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The per-client counters: (metric name, HELP, snapshot field without its unit suffix, is a duration).
COUNTERS: tuple[tuple[str, str, str, bool], ...] = (
    ("fikit_launches_total", "Kernel and graph launches the clients made.", "launches", False),
    ("fikit_launches_held_total", "Launches the library held back for a more urgent client.",
     "held_launches", False),
    ("fikit_held_seconds_total", "Time launches spent held in the library, summed over launches.",
     "held", True),
    ("fikit_gpu_kernel_seconds_total", "Measured GPU time of the clients' kernels.", "gpu", True),
    ("fikit_gpu_idle_gap_seconds_total", "Measured idle time between the clients' kernels (their gaps).",
     "idle_gap", True),
    ("fikit_filled_seconds_total",
     "GPU time (predicted) the clients' held launches put into more urgent clients' idle time.",
     "filled", True),
)
RELEASE_REASONS = ("gap", "idle", "corun", "guard")
HELD_BUCKETS = 12  # libfikit.so's held-time buckets (the snapshot's held_hist), the last one +Inf
N = len(COUNTERS) + len(RELEASE_REASONS) + HELD_BUCKETS
_IDX = {c[2]: i for i, c in enumerate(COUNTERS)}

Group = tuple[int, str, int]  # gpu, prog, prio: the only labels a client's series has
Key = tuple[int, int, int]  # gpu, slot, pid: one client process


class MetricsError(Exception):
    """The metrics endpoint cannot be served (the address is taken or cannot be bound)."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _seconds(client: dict[str, Any], base: str) -> float:
    """A duration under whichever unit suffix the snapshot uses; absent is 0 (a field not yet filled)."""
    for suffix, scale in (("_s", 1.0), ("_us", 1e-6), ("_ns", 1e-9)):
        value = _number(client.get(base + suffix))
        if value is not None:
            return value * scale
    return 0.0


def client_values(client: dict[str, Any]) -> tuple[float, ...]:
    """One snapshot client's counters in COUNTERS order, then released by RELEASE_REASONS."""
    out = [
        _seconds(client, field) if duration else (_number(client.get(field)) or 0.0)
        for _, _, field, duration in COUNTERS
    ]
    out += [_number(client.get(f"released_{r}")) or 0.0 for r in RELEASE_REASONS]
    hist = client.get("held_hist")
    hist = hist if isinstance(hist, list) and len(hist) == HELD_BUCKETS else [0.0] * HELD_BUCKETS
    out += [_number(v) or 0.0 for v in hist]
    return tuple(out)


@dataclass
class _Seen:
    group: Group
    offset: tuple[float, ...]  # counts it had when it joined this group (0 for a new client)
    last: tuple[float, ...]

    def share(self) -> list[float]:
        return [max(0.0, a - b) for a, b in zip(self.last, self.offset, strict=True)]


class Aggregator:
    """Sums clients into (gpu, prog, prio) totals that never go down while their series exists.

    An exited client's last seen counts are kept (``retired``) for as long as its group has live
    clients; increments it made after the last scrape are lost, an undercount rather than a
    false reset.  A client whose priority changes moves: what it did so far stays with the old
    group, the new one counts from the move.
    """

    def __init__(self) -> None:
        self._seen: dict[Key, _Seen] = {}
        self._retired: dict[Group, list[float]] = {}

    def _retire(self, s: _Seen) -> None:
        base = self._retired.setdefault(s.group, [0.0] * N)
        for i, v in enumerate(s.share()):
            base[i] += v

    def update(self, clients: Iterable[tuple[Key, Group, tuple[float, ...]]]) -> dict[Group, list[float]]:
        live: dict[Key, _Seen] = {}
        for key, group, values in clients:
            s = self._seen.pop(key, None)
            if s is not None and s.group != group:
                self._retire(s)
                s = _Seen(group, s.last, values)
            elif s is None:
                s = _Seen(group, (0.0,) * N, values)
            else:
                s.last = tuple(max(a, b) for a, b in zip(values, s.last, strict=True))
            live[key] = s
        for gone in self._seen.values():
            self._retire(gone)
        self._seen = live
        totals: dict[Group, list[float]] = {}
        for s in live.values():
            t = totals.setdefault(s.group, list(self._retired.get(s.group, [0.0] * N)))
            for i, v in enumerate(s.share()):
                t[i] += v
        self._retired = {g: v for g, v in self._retired.items() if g in totals}
        return totals


class FikitCollector:
    """Reads the daemon at scrape time (on a server thread) and yields the fikit_* families."""

    def __init__(self, daemon: Daemon, jobs: dict[str, int]) -> None:
        self._d = daemon
        self._jobs = jobs
        self._agg = Aggregator()
        self._lock = threading.Lock()  # scrapes may overlap; the aggregator is stateful

    def set_jobs(self, jobs: dict[str, int]) -> None:
        self._jobs = jobs  # replaced whole, so a scrape sees one refresh or the other

    def describe(self) -> list[Metric]:
        return []  # no pre-registration check: the families depend on what is running

    def _domains(self) -> list[tuple[int, str, dict[str, Any]]]:
        """(gpu, uuid, snapshot) per GPU; a domain that cannot be read has an unavailable snapshot."""
        domains = getattr(self._d, "domains", None)
        if domains is None:
            return []
        out = []
        for gpu in list(domains.gpus):
            try:
                snap = domains.snapshot(gpu.index)
            except Exception as exc:  # a domain closed under us at shutdown, a torn file
                snap = {"available": False, "reason": str(exc), "clients": []}
            out.append((int(gpu.index), str(gpu.uuid or ""), snap))
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                families = self._families()
            except Exception:
                LOG.exception("metrics: collecting failed; this scrape has only what was read before")
                return
        yield from families

    def _families(self) -> list[Metric]:
        domains = self._domains()
        rows: list[tuple[Key, Group, tuple[float, ...]]] = []
        top: dict[int, int] = {}
        slowdown: dict[tuple[int, str], float] = {}
        clients = GaugeMetricFamily("fikit_clients", "Clients (libfikit.so processes) in the GPU's domain.",
                                    labels=["gpu", "prio"])
        quiet = GaugeMetricFamily(
            "fikit_quiet_clients",
            "Clients publishing their predictions once a stride of launches now (quiet launches; "
            "the gaps inside their bursts are not offered to lower clients).", labels=["gpu"])
        up = GaugeMetricFamily("fikit_domain_up", "1 if the GPU's scheduling domain could be read.",
                               labels=["gpu"])
        mode = GaugeMetricFamily("fikit_scheduler_mode", "1 for the GPU's scheduler mode, 0 for the others.",
                                 labels=["gpu", "mode"])
        info = GaugeMetricFamily("fikit_gpu_info", "Always 1: the GPU's UUID, to join with DCGM's metrics.",
                                 labels=["gpu", "UUID"])
        held_bounds: list[float] = []
        for gpu, uuid, snap in domains:
            g = str(gpu)
            if isinstance(snap.get("held_bounds_s"), list):
                held_bounds = [float(b) for b in snap["held_bounds_s"]]
            uuid = str(snap.get("config", {}).get("gpu_uuid") or uuid)
            if uuid:  # no driver, no UUID: nothing to join on
                info.add_metric([g, uuid], 1.0)
            up.add_metric([g], 1.0 if snap.get("available") else 0.0)
            current = snap.get("config", {}).get("mode") if snap.get("available") else None
            for m in SCHED_MODES:
                mode.add_metric([g, m], 1.0 if m == current else 0.0)
            count: dict[int, int] = dict.fromkeys(PRIO_LEVELS, 0)
            snap_clients = [c for c in snap.get("clients", []) if isinstance(c, dict)]
            for c in snap_clients:
                prio = int(_number(c.get("prio")) or 0)
                prog = str(c.get("prog") or "unknown")
                count[prio] = count.get(prio, 0) + 1
                top[gpu] = min(top.get(gpu, prio), prio)
                rows.append(((gpu, int(c.get("slot", -1)), int(c.get("pid", 0))), (gpu, prog, prio),
                             client_values(c)))
            for c in snap_clients:
                value = _number(c.get("slowdown", c.get("hp_slowdown")))
                if value is not None and int(_number(c.get("prio")) or 0) == top.get(gpu):
                    key = (gpu, str(c.get("prog") or "unknown"))
                    slowdown[key] = max(slowdown.get(key, value), value)
            for p in sorted(count):
                clients.add_metric([g, str(p)], float(count[p]))
            quiet.add_metric([g], float(sum(1 for c in snap_clients if (_number(c.get("stride")) or 1) > 1)))
        totals = self._agg.update(rows)

        out: list[Metric] = [info, up, mode, clients, quiet]
        labels = ["gpu", "prog", "prio"]
        for i, (name, help_text, _, _) in enumerate(COUNTERS):
            fam = CounterMetricFamily(name, help_text, labels=labels)
            for (gpu, prog, prio), t in sorted(totals.items()):
                fam.add_metric([str(gpu), prog, str(prio)], t[i])
            out.append(fam)
        released = CounterMetricFamily(
            "fikit_released_total",
            "Held launches let go, by why: gap (into a more urgent client's predicted gap), idle (every "
            "more urgent client idle), corun (beside busy HP work), guard (the starvation guard).",
            labels=[*labels, "reason"])
        for (gpu, prog, prio), t in sorted(totals.items()):
            for j, reason in enumerate(RELEASE_REASONS):
                released.add_metric([str(gpu), prog, str(prio), reason], t[len(COUNTERS) + j])
        out.append(released)
        out.append(self._held_histogram(totals, held_bounds))
        out.append(self._fill(totals, top))
        if slowdown:
            sd = GaugeMetricFamily(
                "fikit_hp_slowdown_ratio",
                "The estimate of how much slower the most urgent clients' kernels run than at their best "
                "(1.02: 2 % slower); the worst client of the program.", labels=["gpu", "prog"])
            for (gpu, prog), v in sorted(slowdown.items()):
                sd.add_metric([str(gpu), prog], v)
            out.append(sd)
        out.extend(self._daemon_families())
        return out

    @staticmethod
    def _held_histogram(totals: dict[Group, list[float]], bounds: list[float]) -> Metric:
        """Held launches by how long they were held, bucketed by the library itself."""
        fam = HistogramMetricFamily(
            "fikit_hold_duration_seconds",
            "How long each held launch waited in the library (buckets kept by libfikit.so per client).",
            labels=["gpu", "prog", "prio"])
        if len(bounds) != HELD_BUCKETS - 1:
            return fam  # no domain read yet: no bucket layout to speak of
        base = len(COUNTERS) + len(RELEASE_REASONS)
        for (gpu, prog, prio), t in sorted(totals.items()):
            counts = t[base:base + HELD_BUCKETS]
            cumulative, buckets = 0.0, []
            for bound, c in zip([*[repr(b) for b in bounds], "+Inf"], counts, strict=True):
                cumulative += c
                buckets.append((bound, cumulative))
            fam.add_metric([str(gpu), prog, str(prio)], buckets, t[_IDX["held"]])
        return fam

    @staticmethod
    def _fill(totals: dict[Group, list[float]], top: dict[int, int]) -> Metric:
        """Lower clients' filled time over the most urgent clients' idle gaps, per GPU."""
        fam = GaugeMetricFamily(
            "fikit_fill_ratio",
            "Share of the most urgent clients' idle GPU time used by lower-priority clients (their filled "
            "time over the urgent clients' gaps, since those clients started); absent until gaps are "
            "measured.",
            labels=["gpu"])
        filled: dict[int, float] = {}
        gaps: dict[int, float] = {}
        for (gpu, _, prio), t in totals.items():
            if prio == top.get(gpu):
                gaps[gpu] = gaps.get(gpu, 0.0) + t[_IDX["idle_gap"]]
            else:
                filled[gpu] = filled.get(gpu, 0.0) + t[_IDX["filled"]]
        for gpu in sorted(gaps):
            if gaps[gpu] > 0:
                fam.add_metric([str(gpu)], filled.get(gpu, 0.0) / gaps[gpu])
        return fam

    def _daemon_families(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("fikit_jobs", "Jobs in the store, by state.", labels=["state"])
        have = self._jobs
        for state in sorted(set(JOB_STATES) | set(have)):
            jobs.add_metric([state], float(have.get(state, 0)))
        yield jobs
        mps = getattr(self._d, "mps", None)
        if mps is not None:
            up = GaugeMetricFamily(
                "fikit_mps_up", "1 if the MPS control daemon answers (always 0 with [mps] mode = none).",
                labels=["mode"])
            up.add_metric([str(mps.mode)], 1.0 if mps.usable else 0.0)
            yield up
            yield CounterMetricFamily("fikit_mps_restarts_total",
                                      "Times fikitd restarted a managed MPS control daemon.",
                                      value=float(mps.restarts))


class Metrics:
    """The registry, the HTTP server and the loop-side cache; owned by the Daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon
        # *_created series only double the exposition; no dashboard here reads them
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = FikitCollector(daemon, {})
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.store_write = Histogram(
            "fikit_store_write_seconds",
            "Time one write to the SQLite store took (it runs on the daemon's loop).",
            buckets=STORE_BUCKETS, registry=self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, listen: str, host: str, port: int) -> None:
        """Bind now, so a taken address stops the daemon at start with the address in the message."""
        store = getattr(self._d, "store", None)
        if store is not None:
            store.write_observer = self.store_write.observe
        self.refresh()
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        LOG.info("metrics on http://%s/metrics", listen)

    def refresh(self) -> None:
        """On the loop: what a scrape may not read itself (the store's connection belongs to the loop)."""
        store = getattr(self._d, "store", None)
        if store is None:
            return
        t0 = time.perf_counter()
        rows = store.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        self.collector.set_jobs({str(r[0]): int(r[1]) for r in rows})
        LOG.debug("metrics refresh took %.1f ms", (time.perf_counter() - t0) * 1000)

    def stop(self) -> None:
        """Blocking (the server's poll interval): run it off the loop."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
                self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
