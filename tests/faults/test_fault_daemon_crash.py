"""kill -9 of fikitd, 20 times, with libfikit.so clients and jobs running across every kill.

What must hold: clients keep running (fail-open: the daemon is not on their launch path); no job record
is lost or duplicated (the jobs table, read through the protocol, before each kill equals the one
after the restart, id for id); the restarted daemon re-attaches running jobs and settles the ones that
ended while it was down; the grants of live clients survive in the domain; dead clients' slots are swept.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_fixture import DaemonProc
from faultlib import WORKLOAD, client_env, wait_file
from helpers import wait_until

from fikitd import shm

ENV = {"PATH": "/usr/bin:/bin"}
KILLS = 20


def table(d: DaemonProc) -> dict[int, dict[str, Any]]:
    jobs = d.call("jobs", all=True)["jobs"]
    ids = [j["id"] for j in jobs]
    assert len(ids) == len(set(ids)), f"duplicated job records: {ids}"
    return {j["id"]: j for j in jobs}


def test_kill9_daemon_20_times(
    daemon: Callable[..., DaemonProc], fake_build: Any, libfikit: Path, figures: dict[str, Any]
) -> None:
    d = daemon()
    root = d.root
    stop = root / "stop-clients"
    clients = []
    for prio in ("high", "low"):
        progress = root / f"progress.{prio}"
        ready = root / f"ready.{prio}"
        p = subprocess.Popen(
            [
                sys.executable,
                str(WORKLOAD),
                "--kernels",
                "hp_fc:2000" if prio == "high" else "lp_small:0",
                "--repeat",
                "0",
                "--seconds",
                "120",
                "--until",
                str(stop),
                "--progress",
                str(progress),
                "--ready",
                str(ready),
            ],
            env=client_env(d, fake_build.fake_dir, libfikit, prio),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_file(ready, proc=p)
        clients.append((p, progress))
    wait_until(lambda: len(d.call("status")["clients"]) == 2, what="both clients registered")
    dom_dir = root / "run" / "gpu0"

    def grants() -> dict[int, int]:
        dom = shm.Domain.open(dom_dir)
        try:
            return {g.pid: g.prio for g in dom.grants()}
        finally:
            dom.close()

    first_grants = grants()
    assert sorted(first_grants) == sorted(p.pid for p, _ in clients), first_grants

    def progress(path: Path) -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    long_flags: list[Path] = []
    restart_s: list[float] = []
    reregister_s: list[float] = []
    for i in range(KILLS):
        # Work in flight at the kill: a job that ends at once, one that runs until released later.
        flag = root / f"release.{i}"
        long_flags.append(flag)
        d.call("submit", argv=["true"], cwd="/", env=ENV, name=f"quick{i}")
        d.call(
            "submit",
            argv=["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done; exit {i % 3}"],
            cwd="/",
            env=ENV,
            name=f"long{i}",
        )
        if i >= 2:
            long_flags[
                i - 2
            ].touch()  # a job of an earlier round ends while the daemon is down, or just before
        before = table(d)
        seen = [progress(pr) for _, pr in clients]
        d.kill9()
        time.sleep(0.1)  # the clients run while no daemon exists
        t0 = time.monotonic()
        d.start()
        restart_s.append(time.monotonic() - t0)
        # the clients' libraries notice the daemon's end and register their slots again
        wait_until(lambda: len(d.call("status")["clients"]) == 2, timeout=5,
                   what="both clients registered again with the new daemon")
        reregister_s.append(time.monotonic() - t0)
        after = table(d)
        assert sorted(after) == sorted(before), (
            f"round {i}: records lost {set(before) - set(after)}, gained {set(after) - set(before)}"
        )
        for jid, job in before.items():
            if job["state"] not in ("queued", "running"):
                assert after[jid]["state"] == job["state"], (i, job, after[jid])
                assert after[jid]["exit_code"] == job["exit_code"]
            else:
                assert after[jid]["state"] in ("running", "done", "failed"), (i, after[jid])
        for (p, pr), n in zip(clients, seen, strict=True):
            assert p.poll() is None, f"client died across daemon kill {i}: {p.communicate()[1]}"
            wait_until(lambda pr=pr, n=n: progress(pr) > n, timeout=5, what=f"client progress after kill {i}")
        assert grants() == first_grants, f"round {i}: grants of live clients changed"
    for f in long_flags:
        f.touch()
    final = wait_until(
        lambda: (lambda t: t if all(j["state"] in ("done", "failed") for j in t.values()) else None)(
            table(d)
        ),
        timeout=15,
        what="every job settled",
    )
    assert len(final) == 2 * KILLS
    for job in final.values():
        assert job["state"] != "lost", job
        if job["name"].startswith("long"):
            i = int(job["name"][4:])
            assert job["exit_code"] == i % 3, job
        else:
            assert job["exit_code"] == 0, job
    stop.touch()
    for p, _ in clients:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    # The clients registered with the first daemon only (the library registers once, at start);
    # their slots are removed by the sweep of the daemon that finds them dead.
    wait_until(lambda: not list(dom_dir.glob("slot.*")), timeout=15, what="dead clients' slots swept")
    assert grants() == {}
    figures.update(
        kills=KILLS,
        jobs=len(final),
        lost_or_duplicated=0,
        restart_ready_s_max=round(max(restart_s), 3),
        restart_ready_s_median=round(sorted(restart_s)[len(restart_s) // 2], 3),
        reregister_s_max=round(max(reregister_s), 3),
    )
    assert d.stop() == 0


def test_client_started_while_daemon_down_joins_when_it_returns(
    daemon: Callable[..., DaemonProc], fake_build: Any, libfikit: Path
) -> None:
    """A client that starts while fikitd is down (a restart, a slow start) runs unregistered, then
    registers by itself once a daemon answers: it is not left invisible for its whole life."""
    d = daemon()
    root = d.root
    d.kill9()
    stop = root / "stop-client"
    ready = root / "ready.late"
    p = subprocess.Popen(
        [sys.executable, str(WORKLOAD), "--kernels", "hp_fc:2000", "--repeat", "0", "--seconds", "60",
         "--until", str(stop), "--ready", str(ready)],
        env=client_env(d, fake_build.fake_dir, libfikit, "low"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_file(ready, proc=p)
        time.sleep(0.5)  # launching, unregistered
        t0 = time.monotonic()
        d.start()
        wait_until(lambda: [c["pid"] for c in d.call("status")["clients"]] == [p.pid], timeout=5,
                   what="the late client registered")
        assert time.monotonic() - t0 < 3.0
    finally:
        stop.touch()
        _out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
