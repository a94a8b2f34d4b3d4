"""Garbage in shared memory of the daemon's domain: the library detects it or bounds its effect, and
fails open (the program runs, its results are right, every launch reaches the driver once, at most one
``fikit:`` line).

- A peer's slot file (the region a client owns and writes) is scribbled over while a client runs:
  random bytes behind a valid header (what a hostile client can do), and a wholly random file.
- The domain file is replaced with random bytes before a client starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_fixture import DaemonProc
from fakecuda_harness import API_NAMES, assert_counts_match
from helpers import wait_until

from fikitd import shm

HERE = Path(__file__).resolve().parents[1] / "fikitd"
ARGS = ["--mode", "procaddr_self", "--api", "all", "-n", "200", "--kernels", "inc,conv,gemm", "--check"]


def _unharmed(run: Any) -> None:
    assert run.rc == 0, run.describe()
    assert run.report["check"] is True, run.describe()
    truth = run.truth[run.pid]
    for api in API_NAMES:
        assert truth[api] == run.report["launches"][api], run.describe()
    assert len(run.fikit_lines()) <= 1, run.describe()
    assert_counts_match(run)


def _scribbler(
    d: DaemonProc, slot: int, prio: int, whole: bool, stop: threading.Event
) -> subprocess.Popen[bytes]:
    """A registered client (tests/fikitd/fake_client.py) whose slot the test then fills with garbage."""
    p = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "fake_client.py"),
            str(d.root / "run" / "gpu0"),
            str(slot),
            str(d.socket),
            "scribbler",
            str(prio),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**d.env},
    )
    assert p.stdout is not None
    assert b'"ok":true' in p.stdout.readline().replace(b" ", b"")
    path = d.root / "run" / "gpu0" / f"slot.{slot}"
    size = path.stat().st_size
    keep = 64 if not whole else 0  # magic, version, size, pid, uid: still a plausible slot

    def scribble() -> None:
        with open(path, "r+b") as f:
            while not stop.is_set():
                f.seek(keep)
                f.write(os.urandom(size - keep))
                f.flush()

    threading.Thread(target=scribble, daemon=True).start()
    return p




@pytest.mark.parametrize(
    ("victim", "whole"),
    [("high", False), ("high", True), ("low", True), ("low", False)],
    ids=["hp-victim-body", "hp-victim-whole", "lp-victim-whole", "lp-victim-body"],
)
def test_garbage_in_a_peer_slot(
    daemon: Callable[..., DaemonProc], run_client: Any, victim: str, whole: bool, figures: dict[str, Any]
) -> None:
    d = daemon()
    stop = threading.Event()
    # the scribbler takes the other priority: a garbage HP peer must not hold the victim forever either
    scribbler = _scribbler(d, 5, 2 if victim == "high" else 0, whole, stop)
    try:
        env = {
            "FIKIT_DOMAIN": str(d.root / "run" / "gpu0"),
            "FIKIT_SOCKET": str(d.socket),
            "FIKIT_PRIO": victim,
        }
        run = run_client(ARGS, env=env, timeout=15, check_rc=False)
        _unharmed(run)
        figures.update(fikit_lines=run.fikit_lines())
    finally:
        stop.set()
        assert scribbler.stdin is not None
        scribbler.stdin.close()
        scribbler.wait(10)
    assert d.proc is not None and d.proc.poll() is None, "the daemon died reading a garbage slot"
    wait_until(lambda: not (d.root / "run" / "gpu0" / "slot.5").exists(), what="scribbler's slot removed")
    assert "Traceback" not in d.log()


def test_garbage_domain_file(daemon: Callable[..., DaemonProc], run_client: Any) -> None:
    d = daemon()
    dom = d.root / "run" / "gpu0" / "domain"
    size = dom.stat().st_size
    with open(dom, "r+b") as f:
        f.write(os.urandom(size))
    env = {"FIKIT_DOMAIN": str(d.root / "run" / "gpu0"), "FIKIT_SOCKET": str(d.socket), "FIKIT_PRIO": "low"}
    run = run_client(ARGS, env=env, timeout=60, check_rc=False)
    _unharmed(run)
    assert len(run.fikit_lines()) == 1 and "not a fikit domain" in run.fikit_lines()[0], run.describe()
    assert d.call("hello")["protocol"] == 1
    # the daemon's own view of a damaged domain: status still answers
    d.call("status")
    assert shm is not None
