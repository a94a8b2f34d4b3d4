"""fikitd's Prometheus endpoint: a real daemon, real clients, scraped and parsed with the library's parser.

The endpoint is what operators alert on, so these tests check what a scraper sees: counters that
move with the launches fake-driver clients make, one series per (gpu, prog, prio) however many
processes run, a scrape that answers while clients are killed, and a port that is either served or
refused loudly at start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_fixture import REPO, DaemonProc, config_text, start_daemon
from helpers import wait_until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fikitd import metrics

WORKLOAD = REPO / "tests" / "fakecuda" / "workload.py"
FAKE_CLIENT = Path(__file__).resolve().parent / "fake_client.py"
DOCS = REPO / "docs"
CLIENT_LABELS = {"gpu", "prog", "prio"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(root: Path, listen: str, enabled: bool = True, mps: str = "none") -> str:
    metrics = f'[metrics]\nenabled = {"true" if enabled else "false"}\nlisten = "{listen}"'
    return config_text(root, mps).replace("[metrics]\nenabled = false", metrics)


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        return str(r.read().decode())


def parse(text: str) -> Samples:
    """Every sample by (name, sorted labels): what a PromQL selector would find."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> Samples:
    return parse(scrape_text(port))


def select(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {lab: v for (n, lab), v in samples.items()
            if n == name and all(dict(lab).get(k) == v2 for k, v2 in labels.items())}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    found = select(samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matches several series: {found}"
    return next(iter(found.values()), None)


@pytest.fixture
def metrics_daemon(fk_root: Path) -> Iterator[tuple[DaemonProc, int]]:
    port = free_port()
    d = start_daemon(fk_root, config=config(fk_root, f"127.0.0.1:{port}"))
    try:
        yield d, port
    finally:
        if d.proc is not None:
            rc = d.stop()
            assert rc == 0, d.log()
        d.close()


# --- real clients on the fake driver ----------------------------------------------------------------


def workload(d: DaemonProc, fake_dir: Path, lib: Path, kernels: str, prio: str, prog: str,
             until: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FIKIT_", "FAKECUDA_")) and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")}
    env.update(LD_LIBRARY_PATH=str(fake_dir), LD_PRELOAD=str(lib), FIKIT_DOMAIN=str(d.root / "run" / "gpu0"),
               FIKIT_SOCKET=str(d.socket), FIKIT_PRIO=prio, FIKIT_PROG=prog,
               FAKECUDA_DURATIONS="hp_conv=1000,hp_fc=1000,lp_long=20000,*=500",
               FAKECUDA_TIMELINE=str(d.root / "timeline"))
    return subprocess.Popen([sys.executable, str(WORKLOAD), "--kernels", kernels, "--repeat", "0",
                             "--seconds", "30", "--until", str(until)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_counters_move_with_real_clients(metrics_daemon: tuple[DaemonProc, int], fake_build: Any,
                                         libfikit: Path) -> None:
    d, port = metrics_daemon
    stop = d.root / "stop"
    # HP: 1 ms kernels with 5 ms host gaps; LP: 20 ms kernels, which fit no HP gap, so they are held.
    hp = workload(d, fake_build.fake_dir, libfikit, "hp_conv:1000,hp_fc:5000", "high", "serve.py", stop)
    lp = workload(d, fake_build.fake_dir, libfikit, "lp_long:0", "low", "train.py", stop)
    try:
        try:
            wait_until(lambda: len(d.call("status")["clients"]) == 2, timeout=30,
                       what="both clients registered")
        except AssertionError:
            for p in (hp, lp):
                if p.poll() is not None:
                    print(f"client {p.args[3:5]} exited {p.returncode}:", p.communicate()[1])
            print("daemon log:", d.log())
            raise
        hp_l = {"gpu": "0", "prog": "serve.py", "prio": "0"}
        lp_l = {"gpu": "0", "prog": "train.py", "prio": "2"}
        first = wait_until(lambda: (lambda s: s if (value(s, "fikit_launches_total", **hp_l) or 0) > 5
                                    and (value(s, "fikit_launches_held_total", **lp_l) or 0) > 0 else None)(
                                        scrape(port)), timeout=10, what="HP launches and LP held launches")
        assert value(first, "fikit_clients", gpu="0", prio="0") == 1
        assert value(first, "fikit_clients", gpu="0", prio="2") == 1
        assert (value(first, "fikit_held_seconds_total", **lp_l) or 0) > 0
        assert value(first, "fikit_launches_held_total", **hp_l) == 0, "HP is never held"
        # the library's own held-time buckets: every held launch is in one, their sum is the held time
        held_n = value(first, "fikit_launches_held_total", **lp_l)
        assert value(first, "fikit_hold_duration_seconds_count", **lp_l) == held_n
        assert value(first, "fikit_hold_duration_seconds_sum", **lp_l) == pytest.approx(
            value(first, "fikit_held_seconds_total", **lp_l))
        inf = select(first, "fikit_hold_duration_seconds_bucket", **lp_l, le="+Inf")
        assert list(inf.values()) == [held_n]
        assert (value(first, "fikit_gpu_kernel_seconds_total", **hp_l) or 0) > 0
        assert value(first, "fikit_fill_ratio", gpu="0") is not None, "HP gaps are measured: a fill ratio"
        assert value(first, "fikit_scheduler_mode", gpu="0", mode="fikit") == 1
        assert set(select(first, "fikit_released_total", **lp_l)) and all(
            dict(lab)["reason"] in ("gap", "idle", "corun", "guard")
            for lab in select(first, "fikit_released_total"))
        # every per-client series carries exactly the bounded labels
        for name in ("fikit_launches_total", "fikit_launches_held_total", "fikit_held_seconds_total",
                     "fikit_gpu_kernel_seconds_total"):
            for lab in select(first, name):
                assert {k for k, _ in lab} == CLIENT_LABELS, (name, lab)
        # counters move with the launches, and agree with what the snapshot op (fikitctl top) reads
        time.sleep(0.5)
        snap = d.call("snapshot")
        second = scrape(port)
        before = value(first, "fikit_launches_total", **hp_l) or 0
        after = value(second, "fikit_launches_total", **hp_l) or 0
        assert after > before
        in_snap = sum(c["launches"] for g in snap["gpus"] for c in g["clients"] if c["prog"] == "serve.py")
        assert after >= in_snap > 0
    finally:
        stop.touch()
        for p in (hp, lp):
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
    # series of clients that exited disappear
    wait_until(lambda: not select(scrape(port), "fikit_launches_total"), timeout=10,
               what="exited clients' series dropped")
    assert value(scrape(port), "fikit_clients", gpu="0", prio="0") == 0


# --- many clients, and clients killed mid-scrape ---------------------------------------------------------


def test_labels_stay_bounded_and_scrapes_survive_kill9(metrics_daemon: tuple[DaemonProc, int]) -> None:
    """32 processes of one program are one series; killing them all -9 while scraping never fails a
    scrape, the counter never goes down while its series exists, and the series goes with them."""
    d, port = metrics_daemon
    n, kernels = 32, 2
    per_client = sum(100 + k for k in range(kernels))  # what fake_client.py writes as launches
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, str(FAKE_CLIENT), str(d.root / "run" / "gpu0"), str(i),
                               str(d.socket), "batch.py", "2", "--kernels", str(kernels)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for i in range(n)]
    try:
        for p in procs:
            assert p.stdout is not None
            reply = json.loads(p.stdout.readline())
            assert reply["ok"], reply
        wait_until(lambda: value(scrape(port), "fikit_clients", gpu="0", prio="2") == n, timeout=10,
                   what="32 clients in the domain")
        s = scrape(port)
        for name in ("fikit_launches_total", "fikit_launches_held_total", "fikit_held_seconds_total",
                     "fikit_gpu_kernel_seconds_total"):
            series = select(s, name)
            assert len(series) == 1, (name, series)
            assert {k for k, _ in next(iter(series))} == CLIENT_LABELS
        assert len(select(s, "fikit_released_total")) == 4  # one per reason
        assert value(s, "fikit_launches_total", gpu="0", prog="batch.py", prio="2") == n * per_client
        assert not any("pid" in dict(lab) or "job" in dict(lab) for _, lab in s), "unbounded label"

        seen: list[float] = []
        errors: list[str] = []
        done = threading.Event()

        def hammer() -> None:
            while not done.is_set():
                try:
                    v = value(scrape(port), "fikit_launches_total", gpu="0", prog="batch.py", prio="2")
                    if v is not None:
                        seen.append(v)
                except Exception as exc:
                    errors.append(repr(exc))

        t = threading.Thread(target=hammer)
        t.start()
        try:
            for p in procs:
                p.send_signal(signal.SIGKILL)
                time.sleep(0.01)
            for p in procs:
                p.wait(10)
            wait_until(lambda: value(scrape(port), "fikit_clients", gpu="0", prio="2") == 0, timeout=10,
                       what="killed clients gone from the domain")
        finally:
            done.set()
            t.join(10)
        assert not errors, errors[:3]
        assert seen, "no scrape saw the series"
        # the exited clients' last counts stay in the series while it lives: no false counter reset
        assert all(v == n * per_client for v in seen), sorted(set(seen))
        assert not select(scrape(port), "fikit_launches_total"), "series of exited clients dropped"
        assert d.proc is not None and d.proc.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()


# --- the port: off, or refused loudly ---------------------------------------------------------------------


def test_disabled_opens_no_port(fk_root: Path) -> None:
    port = free_port()
    d = start_daemon(fk_root, config=config(fk_root, f"127.0.0.1:{port}", enabled=False))
    try:
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert "metrics on" not in d.log()
        held = [ln for ln in Path(f"/proc/{d.pid}/net/tcp").read_text().splitlines()[1:]
                if ln.split()[3] == "0A" and int(ln.split()[1].split(":")[1], 16) == port]
        assert not held, "fikitd listens on the metrics port"
    finally:
        assert d.stop() == 0, d.log()
        d.close()


def test_port_in_use_is_a_startup_error_naming_the_address(fk_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = start_daemon(fk_root, config=config(fk_root, f"127.0.0.1:{port}"), wait=False)
        try:
            assert d.proc is not None
            rc = d.proc.wait(15)
            assert rc != 0
            assert f"127.0.0.1:{port}" in d.log(), d.log()
            assert "READY=1" not in d.notify.lines()
        finally:
            d.close()


# --- the collector itself, and the docs that describe it ---------------------------------------------------


class _Gpu:
    def __init__(self, index: int, uuid: str) -> None:
        self.index, self.uuid = index, uuid


class _Domains:
    def __init__(self) -> None:
        self.gpus = [_Gpu(0, "GPU-aaaa"), _Gpu(1, "GPU-bbbb")]
        self.clients: list[dict[str, Any]] = []

    def snapshot(self, gpu: int) -> dict[str, Any]:
        if gpu == 1:
            raise ValueError("mmap closed or invalid")  # a domain read that fails mid-scrape
        return {"available": True, "config": {"mode": "strict", "gpu_uuid": "GPU-aaaa"},
                "clients": self.clients}


class _Daemon:
    def __init__(self) -> None:
        self.domains = _Domains()


def _client(slot: int, prio: int, prog: str, **fields: Any) -> dict[str, Any]:
    return {"slot": slot, "pid": 1000 + slot, "prio": prio, "prog": prog, "launches": 0, "held_launches": 0,
            "held_us": 0.0, "gpu_us": 0.0, "idle_gap_us": 0.0, **fields}


def test_collector_fill_slowdown_and_retirement() -> None:
    d = _Daemon()
    m = metrics.Metrics(d)  # type: ignore[arg-type]
    hp = _client(0, 0, "serve.py", idle_gap_us=1000.0, slowdown=1.04, launches=10, stride=32)
    lp1 = _client(1, 2, "train.py", filled_ns=250_000, launches=7, released_gap=3, stride=1)
    lp2 = _client(2, 2, "train.py", filled_us=250.0, launches=5, slowdown=1.9)  # LP slowdown: not HP
    d.domains.clients = [hp, lp1, lp2]
    s = parse(generate_latest(m.registry).decode())
    assert value(s, "fikit_fill_ratio", gpu="0") == pytest.approx(0.5)
    assert value(s, "fikit_hp_slowdown_ratio", gpu="0", prog="serve.py") == pytest.approx(1.04)
    assert not select(s, "fikit_hp_slowdown_ratio", prog="train.py")
    assert value(s, "fikit_launches_total", gpu="0", prog="train.py", prio="2") == 12
    assert value(s, "fikit_released_total", prog="train.py", reason="gap") == 3
    assert value(s, "fikit_domain_up", gpu="1") == 0, "a failed domain read is reported, not raised"
    assert value(s, "fikit_scheduler_mode", gpu="0", mode="strict") == 1
    assert value(s, "fikit_gpu_info", gpu="0", UUID="GPU-aaaa") == 1
    assert value(s, "fikit_quiet_clients", gpu="0") == 1  # the HP at stride 32; lp2 reports none
    # one LP exits after more launches: its last counts stay; the other moves to prio 1
    lp1["launches"] = 9
    s = parse(generate_latest(m.registry).decode())
    assert value(s, "fikit_launches_total", gpu="0", prog="train.py", prio="2") == 14
    d.domains.clients = [hp, {**lp2, "prio": 1, "launches": 8}]
    s = parse(generate_latest(m.registry).decode())
    assert not select(s, "fikit_launches_total", prog="train.py", prio="2"), "group without clients dropped"
    assert value(s, "fikit_launches_total", gpu="0", prog="train.py", prio="1") == 3  # counts from the move
    # without snapshot slowdowns the gauge is not exported at all
    d.domains.clients = [{k: v for k, v in hp.items() if k != "slowdown"}]
    assert "fikit_hp_slowdown_ratio" not in generate_latest(m.registry).decode()


def _exported_names() -> set[str]:
    d = _Daemon()
    d.domains.clients = [_client(0, 0, "a", idle_gap_us=10.0, slowdown=0.1), _client(1, 2, "b")]
    m = metrics.Metrics(d)  # type: ignore[arg-type]
    m.collector.set_jobs({"done": 1})

    class _Mps:
        mode, usable, restarts = "manage", True, 0

    d.mps = _Mps()  # type: ignore[attr-defined]
    return {f.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())}


def test_docs_describe_every_metric_and_the_dashboard_uses_real_ones() -> None:
    names = _exported_names()
    assert {"fikit_launches", "fikit_fill_ratio", "fikit_hp_slowdown_ratio", "fikit_jobs", "fikit_mps_up",
            "fikit_mps_restarts", "fikit_store_write_seconds", "process_resident_memory_bytes",
            "process_cpu_seconds"} <= names
    doc = (DOCS / "observability.md").read_text()
    for name in names:
        if name.startswith("fikit_"):
            assert re.search(rf"`{name}(_total)?[`{{]", doc), f"{name} is not documented"
    dash = json.loads((DOCS / "grafana-fikit.json").read_text())
    panels = dash["panels"]
    titles = " ".join(p["title"].lower() for p in panels)
    for want in ("slowdown", "fill", "held", "jobs", "mps"):
        assert want in titles, f"no panel about {want}"
    for p in panels:
        for target in p.get("targets", []):
            for metric in re.findall(r"\b(fikit_[a-z_]+|process_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                assert base in names, f"panel {p['title']!r} uses {metric}, which fikitd does not export"


def test_scrapes_answer_through_an_mps_restart(fk_root: Path) -> None:
    """The managed MPS control daemon dies: scrapes keep answering while fikitd restarts it, and
    the restart shows in fikit_mps_up and fikit_mps_restarts_total."""
    port = free_port()
    cfg = config(fk_root, f"127.0.0.1:{port}", mps="manage")
    d = start_daemon(fk_root, config=cfg)
    try:
        assert value(scrape(port), "fikit_mps_restarts_total") == 0
        pidfile = fk_root / "run" / "mps" / "nvidia-cuda-mps-control.pid"
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 15
        restarted = False
        while time.monotonic() < deadline and not restarted:
            s = scrape(port)  # must answer every time, whatever state MPS is in
            restarted = (value(s, "fikit_mps_restarts_total") or 0) >= 1 and any(
                v == 1 for v in select(s, "fikit_mps_up").values())
            time.sleep(0.05)
        assert restarted, "no MPS restart seen in the metrics within 15 s"
    finally:
        assert d.stop() == 0
