"""Client registration against the real shared-memory layout (needs a built libfikit.so)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_fixture import DaemonProc, find_libfikit
from helpers import NOBODY, call_as, wait_until

from fikitd import shm

HERE = Path(__file__).resolve().parent
LIB = find_libfikit()
pytestmark = pytest.mark.skipif(LIB is None, reason="libfikit.so not built (cmake)")


@pytest.fixture(autouse=True)
def _layout_from_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reads the shared memory too (to check grants): same library as the daemon."""
    monkeypatch.setenv("FIKIT_LIBRARY", str(LIB))


class Fake:
    def __init__(self, d: DaemonProc, slot: int, prog: str = "train.py", prio: int = 1, *extra: str) -> None:
        self.slot = slot
        env = {**d.env}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fake_client.py"), str(d.root / "run" / "gpu0"), str(slot),
             str(d.socket), prog, str(prio), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(self.proc.stderr.read().decode() if self.proc.stderr else "no reply")
        self.reply: dict[str, Any] = json.loads(line)

    def exit(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def domain(d: DaemonProc) -> shm.Domain:
    return shm.Domain.open(d.root / "run" / "gpu0")


def test_register_grant_and_exit(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    dom_dir = d.root / "run" / "gpu0"
    assert oct(dom_dir.stat().st_mode & 0o7777) == "0o1777"
    c = Fake(d, 3, "train.py", 2, "--kernels", "5")
    assert c.reply["ok"], c.reply
    assert c.reply["result"]["prio"] == 2 and c.reply["result"]["mode"] == "fikit"
    assert c.reply["result"]["profile"] == ""  # nothing stored for train.py yet
    grants = domain(d).grants()
    assert [(g.slot, g.pid, g.prio) for g in grants] == [(3, c.proc.pid, 2)]
    status = d.call("status")
    assert status["clients"][0]["prog"] == "train.py"
    snap = d.call("snapshot")["gpus"][0]
    assert snap["clients"][0]["slot"] == 3 and snap["clients"][0]["granted"]
    c.exit()
    wait_until(lambda: not (dom_dir / "slot.3").exists(), what="slot removed")
    assert domain(d).grants() == []
    kernels = d.call("profiles", action="show", prog="train.py")["kernels"]
    assert len(kernels) == 5 and kernels[0]["count"] == 104
    # a second run of the program starts with its measurements preloaded
    c2 = Fake(d, 4, "train.py", 2)
    prof = Path(c2.reply["result"]["profile"])
    assert prof == dom_dir / "profile.4" and prof.stat().st_size > 0
    c2.exit()
    wait_until(lambda: not prof.exists(), what="profile removed")


def test_high_is_clamped_and_identity_checked(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    # uid nobody, slot file owned by root: refused
    c = Fake(d, 1, "x", 1, "--uid", str(NOBODY))
    assert c.reply["error"]["code"] == "not_permitted" and "belongs to uid 0" in c.reply["error"]["message"]
    c.exit()
    # a slot file claiming another pid: refused
    c = Fake(d, 2, "x", 1, "--claim-pid", "1")
    assert c.reply["error"]["code"] == "not_permitted"
    c.exit()
    # no slot file at all
    with d.client() as cl:
        try:
            cl.call("register", pid=1, slot=9, prio=0, gpu=0, prog="x")
            raise AssertionError("registered with someone else's pid")
        except Exception as exc:
            assert getattr(exc, "code", "") == "not_permitted"
    assert domain(d).grants() == []
    assert d.call("hello")["protocol"] == 1


def test_set_prio(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    c = Fake(d, 6, "serve.py", 2)
    try:
        client = d.call("set_prio", pid=c.proc.pid, prio="high")["client"]
        assert client["prio"] == 0
        assert [(g.slot, g.prio) for g in domain(d).grants()] == [(6, 0)]
        assert call_as(NOBODY, d.socket, "set_prio", pid=c.proc.pid, prio=2)["error"] == "not_permitted"
    finally:
        c.exit()


def test_dead_client_slot_is_swept(fikitd_daemon: DaemonProc) -> None:
    d = fikitd_daemon
    c = Fake(d, 5)
    assert c.reply["ok"]
    c.proc.kill()  # kill -9: the EOF still reaches the daemon
    c.proc.wait()
    wait_until(lambda: not (d.root / "run" / "gpu0" / "slot.5").exists(), what="slot freed")
    # a leftover slot file of a dead process that never registered is reaped by the sweep
    dead = subprocess.run(["true"])
    assert dead.returncode == 0
    from fake_client import slot_bytes

    (d.root / "run" / "gpu0" / "slot.7").write_bytes(slot_bytes(999999, 0, 1, "ghost", 0))
    wait_until(lambda: not (d.root / "run" / "gpu0" / "slot.7").exists(), timeout=8, what="stale slot reaped")


def test_32_clients_rss(fikitd_daemon: DaemonProc, capsys: pytest.CaptureFixture[str]) -> None:
    d = fikitd_daemon
    clients = [Fake(d, i, f"prog{i % 4}.py", 1 + i % 2, "--kernels", "20") for i in range(32)]
    try:
        assert all(c.reply["ok"] for c in clients)
        assert len(d.call("status")["clients"]) == 32
        assert len(domain(d).grants()) == 32
        t0 = time.monotonic()
        d.call("snapshot")
        snap_ms = (time.monotonic() - t0) * 1000
        rss_kb = int(next(ln.split()[1] for ln in Path(f"/proc/{d.pid}/status").read_text().splitlines()
                          if ln.startswith("VmRSS:")))
        with capsys.disabled():
            print(f"\nfikitd RSS with 32 registered clients: {rss_kb / 1024:.1f} MiB; "
                  f"snapshot {snap_ms:.1f} ms")
        assert rss_kb < 100 * 1024
    finally:
        for c in clients:
            c.exit()
    wait_until(lambda: d.call("status")["clients"] == [], what="all clients gone")
    assert len(d.call("profiles", action="list")["profiles"]) == 4
