"""MPS faults on the stand-ins of tests/fakebin (control daemon and server) and tests/fakecuda.

1. The control daemon dies, and at first cannot be started again.  fikitd notices (two failed
   probes, 2 s apart), reports it in ``status`` (``mps.state`` = ``restarting``, a reason, the restart
   count, an event), retries with a backoff that doubles, and is ``running`` again once a start
   succeeds.  Running jobs keep running, and their records say that the control daemon stopped
   answering.
2. The MPS *server* of a running job is killed (the control daemon lives on).  A client whose
   server is gone gets an error on its next CUDA call (the fake driver: CUDA_ERROR_MPS_CONNECTION_FAILED):
   the job ends ``failed`` with its exit code and a reason naming the server; ``status`` reports the
   death; the next job gets a new server and ends ``done``.
3. The same with a client that hangs on the dead server instead (FAKECUDA_MPS_LOST=hang): fikitd
   stops it ``[mps] dead_server_grace_s`` after noticing, and it ends ``failed`` saying so.

The GPU counterpart of 2 and of killing the control daemon under a job is bench/verify_mps_fault.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from daemon_fixture import FAKEBIN, DaemonProc, config_text, start_daemon
from fakecuda_harness import FakeBuild
from faultlib import DURATIONS, WORKLOAD
from helpers import wait_until

ENV = {"PATH": "/usr/bin:/bin"}


def test_mps_control_death_restart_with_backoff(fk_root: Path, figures: dict[str, Any]) -> None:
    attempts = fk_root / "attempts"
    broken = fk_root / "broken"
    wrapper = fk_root / "mps-control"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-d" ]; then date +%s.%N >> {attempts}; [ -e {broken} ] && exit 1; fi\n'
        f'exec python3 {FAKEBIN / "nvidia-cuda-mps-control"} "$@"\n'
    )
    wrapper.chmod(0o755)
    text = config_text(fk_root, "manage").replace(
        'mode = "manage"', f'mode = "manage"\ncontrol = "{wrapper}"'
    )
    d = start_daemon(fk_root, config=text)
    try:
        assert d.call("status")["mps"]["state"] == "running"
        flag = fk_root / "job-go"
        job = d.call(
            "submit", argv=["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done"], cwd="/", env=ENV
        )["job"]
        pidfile = fk_root / "run" / "mps" / "nvidia-cuda-mps-control.pid"
        broken.touch()
        killed = time.monotonic()
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        mps = wait_until(
            lambda: (lambda m: m if m["state"] == "restarting" else None)(d.call("status")["mps"]),
            timeout=10,
            what="fikitd notices the dead control daemon",
        )
        noticed_s = time.monotonic() - killed
        assert "does not answer" in mps["reason"] or "exited" in mps["reason"], mps
        wait_until(lambda: len(attempts.read_text().split()) >= 5, timeout=30, what="four failed restarts")
        status = d.call("status")
        assert status["mps"]["state"] == "restarting" and "exited with 1" in status["mps"]["reason"], status[
            "mps"
        ]
        assert status["mps"]["restarts"] >= 4
        tries = [float(t) for t in attempts.read_text().split()][1:]  # the first was the start at boot
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps[-1] >= 3.5 and gaps[-1] > gaps[0], f"no backoff between restart attempts: {gaps}"
        # the job keeps running while MPS is down, and its record says what happened to it
        during = d.call("show", job=job["id"])["job"]
        assert during["state"] == "running"
        assert "MPS control daemon stopped answering" in (during.get("reason") or ""), during
        assert any("control daemon died" in e["event"] for e in status["mps"]["events"])
        assert "MPS control daemon died" in d.log() and "MPS control daemon restarted" not in d.log()
        broken.unlink()
        wait_until(lambda: d.call("status")["mps"]["state"] == "running", timeout=20, what="MPS back")
        recovered_s = time.monotonic() - killed
        flag.touch()
        done = wait_until(
            lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
                d.call("show", job=job["id"])["job"]
            ),
            what="job ends",
        )
        assert done["state"] == "done" and done["exit_code"] == 0
        figures.update(
            noticed_s=round(noticed_s, 2),
            retry_gaps_s=[round(g, 2) for g in gaps],
            recovered_after_fix_s=round(recovered_s, 2),
            job_during_outage="kept running; its record's reason says the control daemon stopped answering",
        )
    finally:
        assert d.stop() == 0
        d.close()


def _fake_job_env(fake_dir: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(fake_dir), "FAKECUDA_DURATIONS": DURATIONS,
            **extra}


LONG = [sys.executable, str(WORKLOAD), "--kernels", "lp_small:20000", "--repeat", "0", "--seconds", "60"]
SHORT = [sys.executable, str(WORKLOAD), "--kernels", "lp_small:1000", "--repeat", "20"]


def _linked_server(d: DaemonProc, job_id: int) -> int:
    """The MPS server fikitd has linked the job to (it asks get_client_list every 2 s)."""
    servers = wait_until(lambda: d.call("status")["mps"]["jobs"].get(str(job_id)), timeout=20,
                         what=f"fikitd links job {job_id} to its MPS server")
    assert len(servers) == 1, servers
    return int(servers[0])


def _ended(d: DaemonProc, job_id: int, timeout: float) -> dict[str, Any]:
    return wait_until(
        lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
            d.call("show", job=job_id)["job"]),
        timeout=timeout, what=f"job {job_id} ends",
    )


def test_mps_server_killed_job_fails_with_reason(
    fk_root: Path, fake_build: FakeBuild, figures: dict[str, Any]
) -> None:
    d = start_daemon(fk_root, mps="manage")
    env = _fake_job_env(fake_build.fake_dir)
    try:
        job = d.call("submit", argv=LONG, cwd="/", env=env, prio=2)["job"]
        server = _linked_server(d, job["id"])
        assert d.call("status")["mps"]["servers"] == [server]
        os.kill(server, signal.SIGKILL)
        killed = time.monotonic()
        ended = _ended(d, job["id"], timeout=10)
        ended_s = time.monotonic() - killed
        assert ended["state"] == "failed" and ended["exit_code"] == 1, ended
        assert f"its MPS server (pid {server}) died" in ended["reason"], ended
        err = d.call("logs", job=job["id"], stream="stderr")["data"]
        assert "CUresult 805" in err, err
        mps = wait_until(lambda: (lambda m: m if m["server_deaths"] else None)(d.call("status")["mps"]),
                         timeout=5, what="status reports the dead server")
        noticed_s = time.monotonic() - killed
        assert mps["state"] == "running"
        assert any(f"server {server} died; job(s) {job['id']}" in e["event"] for e in mps["events"]), mps
        # the next job gets a new server from the same control daemon, and runs
        after = d.call("submit", argv=SHORT, cwd="/", env=env, prio=2)["job"]
        done = _ended(d, after["id"], timeout=20)
        assert done["state"] == "done" and done["exit_code"] == 0, done
        assert server not in d.call("status")["mps"]["servers"]
        assert "started server" in (fk_root / "log" / "mps" / "control.log").read_text().split(
            f"started server {server}")[1]
        figures.update(job_ended_s=round(ended_s, 2), status_reported_s=round(noticed_s, 2),
                       job=f"failed, exit 1: {ended['reason']}")
    finally:
        assert d.stop() == 0
        d.close()


def test_mps_server_killed_hanging_job_is_stopped(
    fk_root: Path, fake_build: FakeBuild, figures: dict[str, Any]
) -> None:
    text = config_text(fk_root, "manage").replace('mode = "manage"',
                                                  'mode = "manage"\ndead_server_grace_s = 2')
    d = start_daemon(fk_root, config=text)
    try:
        env = _fake_job_env(fake_build.fake_dir, FAKECUDA_MPS_LOST="hang")
        job = d.call("submit", argv=LONG, cwd="/", env=env, prio=2)["job"]
        server = _linked_server(d, job["id"])
        os.kill(server, signal.SIGKILL)
        killed = time.monotonic()
        told = wait_until(
            lambda: (lambda j: j if j.get("reason") else None)(d.call("show", job=job["id"])["job"]),
            timeout=5, what="the job's record says its server died",
        )
        told_s = time.monotonic() - killed
        assert told["state"] == "running" and f"its MPS server (pid {server}) died at" in told["reason"], told
        ended = _ended(d, job["id"], timeout=15)
        ended_s = time.monotonic() - killed
        assert ended["state"] == "failed" and ended["exit_code"] == 128 + signal.SIGTERM, ended
        assert "fikitd stopped it" in ended["reason"] and "died at" in ended["reason"], ended
        assert 2 <= ended_s <= 2 + 2.5 + 2, ended_s  # grace + one MPS check period + slack
        assert "stopping it" in d.log()
        figures.update(told_s=round(told_s, 2), stopped_after_s=round(ended_s, 2), reason=ended["reason"])
    finally:
        assert d.stop() == 0
        d.close()
