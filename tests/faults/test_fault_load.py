"""Load: 1,000 jobs from 4 users at once; 64 clients registered at once; many short-lived library clients.

Figures recorded: daemon RSS before/after, socket latency p50/p99 of submit, fd and slot counts
before/after, short-lived clients run in the time budget.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from daemon_fixture import DaemonProc
from fake_client import slot_bytes
from faultlib import fd_count, quantile, rss_kib, slot_files
from helpers import collect_as_user, start_as_user, wait_until

from fikitd.protocol import Client, DaemonError

# root, nobody, and two system accounts every Debian/Ubuntu-like host has (65533/65532 usually have no
# passwd entry, and the daemon refuses jobs of a uid it cannot name: that is tested separately below)
USERS = (0, 65534, 1, 2)
JOBS = 1000
ENV = {"PATH": "/usr/bin:/bin"}
SHORT_LIVED = 10_000
SHORT_LIVED_BUDGET_S = 40.0  # stop early (and say so in the figures) on a slower machine


def test_1000_jobs_from_4_users(daemon: Callable[..., DaemonProc], figures: dict[str, Any]) -> None:
    d = daemon()
    rss0 = rss_kib(d.pid)

    def submitter() -> dict[str, Any]:
        lat: list[float] = []
        ok: list[int] = []
        refused: list[str] = []
        with Client(d.socket, timeout=30) as c:
            for i in range(JOBS // len(USERS)):
                t0 = time.perf_counter()
                try:
                    ok.append(c.call("submit", argv=["true"], cwd="/", env=ENV, name=f"load{i}")["job"]["id"])
                except DaemonError as e:
                    refused.append(f"{e.code}: {e.message}")
                lat.append(time.perf_counter() - t0)
        return {"lat": lat, "ok": ok, "refused": refused}

    t0 = time.monotonic()
    kids = [start_as_user(uid, submitter) for uid in USERS]
    results = [collect_as_user(pid, r) for pid, r in kids]
    wall = time.monotonic() - t0
    lat = [x for res in results for x in res["lat"]]
    accepted = [j for res in results for j in res["ok"]]
    refused = [m for res in results for m in res["refused"]]
    assert len(accepted) + len(refused) == JOBS
    assert all(m.split(":")[0] in ("not_permitted", "unavailable", "too_large") for m in refused), refused[:5]
    wait_until(lambda: not d.call("jobs")["jobs"], timeout=60, what="every job ended")
    jobs = d.call("jobs", all=True)["jobs"]
    ids = [j["id"] for j in jobs]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(accepted), "records lost or duplicated"
    by_uid = {uid: sum(1 for j in jobs if j["uid"] == uid) for uid in USERS}
    assert all(n == JOBS // len(USERS) for n in by_uid.values()) or refused, by_uid
    assert not refused, refused[:3]
    bad = [j for j in jobs if j["state"] != "done"]
    assert not bad, bad[:3]
    rss1 = rss_kib(d.pid)
    figures.update(
        accepted=len(accepted),
        refused=len(refused),
        wall_s=round(wall, 2),
        submit_ms_p50=round(quantile(lat, 0.5) * 1e3, 2),
        submit_ms_p99=round(quantile(lat, 0.99) * 1e3, 2),
        rss_kib_before=rss0,
        rss_kib_after=rss1,
    )
    assert d.stop() == 0


def test_64_clients_at_once_then_many_short_lived(
    daemon: Callable[..., DaemonProc], fake_build: Any, libfikit: Path, figures: dict[str, Any]
) -> None:
    d = daemon()
    dom = d.root / "run" / "gpu0"
    # warm-up: the first registrations load what they need; measure from a steady state
    for _ in range(2):
        subprocess.run(
            [str(fake_build.client), "-n", "1"],
            env=_lib_env(d, fake_build, libfikit),
            check=True,
            capture_output=True,
            timeout=30,
        )
    time.sleep(0.1)
    fds0, rss0, slots0 = fd_count(d.pid), rss_kib(d.pid), slot_files(d)
    assert slots0 == []

    # 64 at once: forked children, each claims a slot file and registers, held until released
    release_r, release_w = os.pipe()
    kids: list[tuple[int, int]] = []
    for i in range(64):

        def hold(i: int = i) -> dict[str, Any]:
            os.close(release_w)  # or the read below never sees the test close its end
            fd = os.open(dom / f"slot.{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, slot_bytes(os.getpid(), os.getuid(), 2, f"p{i}", 2))
            os.close(fd)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            s.sendall(
                json.dumps(
                    {
                        "v": 1,
                        "op": "register",
                        "pid": os.getpid(),
                        "slot": i,
                        "prio": 2,
                        "gpu": 0,
                        "prog": f"p{i}",
                    }
                ).encode()
                + b"\n"
            )
            reply = json.loads(s.makefile("rb").readline())
            os.read(release_r, 1)  # keep the connection until the test releases us
            return {"ok": reply.get("ok"), "error": reply.get("error")}

        kids.append(start_as_user(0, hold))
    wait_until(lambda: len(d.call("status")["clients"]) == 64, timeout=30, what="64 clients registered")
    rss64 = rss_kib(d.pid)
    assert len(slot_files(d)) == 64
    os.close(release_w)
    outs = [collect_as_user(pid, r) for pid, r in kids]
    os.close(release_r)
    assert all(o["ok"] for o in outs), [o for o in outs if not o["ok"]][:3]
    wait_until(lambda: not d.call("status")["clients"] and not slot_files(d), timeout=20, what="64 released")

    # short-lived real library clients, 4 at a time, for a fixed time budget
    env = _lib_env(d, fake_build, libfikit)
    deadline = time.monotonic() + SHORT_LIVED_BUDGET_S
    tickets = iter(range(SHORT_LIVED))
    lock = threading.Lock()

    def take() -> bool:
        with lock:
            return next(tickets, None) is not None and time.monotonic() < deadline

    t_short = time.monotonic()

    def worker() -> int:
        n = 0
        while take():
            p = subprocess.run([str(fake_build.client), "-n", "1"], env=env, capture_output=True, timeout=30)
            assert p.returncode == 0, p.stderr
            assert b"fikit:" not in p.stderr, p.stderr
            n += 1
        return n

    with ThreadPoolExecutor(4) as ex:
        started = sum(ex.map(lambda _: worker(), range(4)))
    short_s = time.monotonic() - t_short
    wait_until(lambda: not d.call("status")["clients"] and not slot_files(d), timeout=20, what="all released")
    time.sleep(0.3)
    fds1, rss1 = fd_count(d.pid), rss_kib(d.pid)
    figures.update(
        clients_64_rss_kib=rss64,
        short_lived_clients=started,
        short_lived_s=round(short_s, 1),
        fds_before=fds0,
        fds_after=fds1,
        slots_after=len(slot_files(d)),
        rss_kib_before=rss0,
        rss_kib_after=rss1,
    )
    assert fds1 <= fds0, f"fd leak: {fds0} -> {fds1}"
    assert rss1 - rss0 < 8 * 1024, f"daemon RSS grew {rss1 - rss0} KiB over {started} clients"
    assert d.stop() == 0


def _lib_env(d: DaemonProc, fake_build: Any, libfikit: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIKIT_", "FAKECUDA_"))}
    env.update(
        LD_LIBRARY_PATH=str(fake_build.fake_dir),
        LD_PRELOAD=str(libfikit),
        FIKIT_DOMAIN=str(d.root / "run" / "gpu0"),
        FIKIT_SOCKET=str(d.socket),
        FIKIT_PRIO="low",
    )
    return env


def test_unknown_uid_is_refused_with_a_reason(fikitd_daemon: DaemonProc) -> None:
    def submit() -> dict[str, Any]:
        try:
            with Client(fikitd_daemon.socket) as c:
                return c.call("submit", argv=["true"], cwd="/", env=ENV)
        except DaemonError as e:
            return {"code": e.code, "message": e.message}

    pid, r = start_as_user(65533, submit)
    assert collect_as_user(pid, r) == {"code": "not_permitted", "message": "uid 65533 has no passwd entry"}
