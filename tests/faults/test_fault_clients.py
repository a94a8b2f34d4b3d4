"""kill -9 of libfikit.so clients registered with the real daemon, on the fake driver's shared timeline.

- HP killed while LP clients are held: every LP client runs again within 100 ms (worst case recorded).
- LP killed while it is being let into HP's gaps: HP is not blocked, and the LP's slot and grant are
  reclaimed (on EOF of its registration connection; the sweep would catch a missed EOF).
"""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_fixture import DaemonProc, Procs, times
from faultlib import slot_files
from helpers import wait_until

from fikitd import shm

# idle_us long: a 2-core CI machine that stalls the busy HP for a few ms must not look like HP idling.
# corun_sm_pct = 0: these faults are about held LP clients, which co-running would let run instead.
SCHED = "\n[scheduler]\nidle_us = 8000\ncorun_sm_pct = 0\n"


def test_hp_killed_lp_clients_resume_within_100ms(
    daemon: Callable[..., DaemonProc], fake_build: Any, libfikit: Path, figures: dict[str, Any]
) -> None:
    d = daemon(extra=SCHED)
    procs = Procs(d, fake_build.fake_dir, libfikit)
    try:
        stop = d.root / "stop"
        lps = [
            procs.start("lp_small:0", "low", "--repeat", "0", "--seconds", "60", "--until", str(stop))
            for _ in range(3)
        ]
        resume_ms: list[float] = []
        for rnd in range(3):
            hp, _ = procs.start(
                "hp_conv:200", "high", "--repeat", "0", "--seconds", "30"
            )  # busy back to back
            wait_until(lambda: len(d.call("status")["clients"]) == 4, what="HP registered")
            time.sleep(0.4)
            window = time.monotonic_ns()
            time.sleep(0.4)
            held = [len([t for t in times(pr) if t > window]) for _, pr in lps]
            assert max(held) <= 2, f"round {rnd}: LP clients ran {held} kernels beside a busy HP"
            killed = time.monotonic_ns()
            hp.send_signal(signal.SIGKILL)
            hp.communicate()
            wait_until(
                lambda killed=killed: all(any(t > killed for t in times(pr)) for _, pr in lps),
                timeout=5,
                what="every LP ran after HP died",
            )
            for _, pr in lps:
                first = min(t for t in times(pr) if t > killed)
                resume_ms.append((first - killed) / 1e6)
            wait_until(lambda: len(d.call("status")["clients"]) == 3, what="dead HP unregistered")
        stop.touch()
        for p, _ in lps:
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
        worst = max(resume_ms)
        figures.update(
            samples=len(resume_ms),
            lp_resume_ms_worst=round(worst, 2),
            lp_resume_ms_median=round(sorted(resume_ms)[len(resume_ms) // 2], 2),
            note="first LP kernel completion after the kill (includes its 1 ms kernel)",
        )
        assert worst <= 100.0, f"an LP client resumed {worst:.1f} ms after HP died: {resume_ms}"
    finally:
        procs.close()


def test_lp_killed_mid_release_does_not_block_hp(
    daemon: Callable[..., DaemonProc], fake_build: Any, libfikit: Path, figures: dict[str, Any]
) -> None:
    d = daemon(extra=SCHED)
    procs = Procs(d, fake_build.fake_dir, libfikit)
    dom_dir = d.root / "run" / "gpu0"
    try:
        stop = d.root / "stop"
        # HP: 3 ms kernels with 5 ms host gaps, which 1 ms LP kernels fill.
        hp, hp_prog = procs.start(
            "hp_conv:5000", "high", "--repeat", "0", "--seconds", "60", "--until", str(stop)
        )
        lps = [procs.start("lp_small:0", "low", "--repeat", "0", "--seconds", "60") for _ in range(3)]
        wait_until(lambda: len(d.call("status")["clients"]) == 4, what="all registered")
        time.sleep(1.0)  # HP's kernels and gaps are measured; LP kernels are let into the gaps
        for _, pr in lps:
            assert len(times(pr)) > 20, "LP clients should be filling HP's gaps"
        killed_at: list[int] = []
        reclaim_ms: list[float] = []
        for p, pr in lps:
            n = len(times(pr))
            wait_until(lambda pr=pr, n=n: len(times(pr)) > n + 2, what="LP releasing")  # in the middle of it
            slot = {g.pid: g.slot for g in shm.Domain.open(dom_dir).grants()}[p.pid]
            t0 = time.monotonic_ns()
            p.send_signal(signal.SIGKILL)
            p.communicate()
            killed_at.append(t0)
            wait_until(
                lambda slot=slot: f"slot.{slot}" not in slot_files(d), timeout=5, what="slot reclaimed"
            )
            reclaim_ms.append((time.monotonic_ns() - t0) / 1e6)
            assert all(g.pid != p.pid for g in shm.Domain.open(dom_dir).grants())
            time.sleep(0.3)
        time.sleep(0.5)
        assert [c["pid"] for c in d.call("status")["clients"]] == [hp.pid]
        assert slot_files(d) == [f"slot.{g.slot}" for g in shm.Domain.open(dom_dir).grants()]
        stop.touch()
        out, err = hp.communicate(timeout=30)
        assert hp.returncode == 0, err
        res = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
        iters = res["iter_s"][5:]
        med = sorted(iters)[len(iters) // 2]
        # HP kernel completions around each kill: no stall (an iteration is 3 ms GPU + 5 ms host).
        hp_t = times(hp_prog)
        worst_gap_ms = 0.0
        for k in killed_at:
            near = [t for t in hp_t if k - 50_000_000 < t < k + 300_000_000]
            gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(near)]
            worst_gap_ms = max(worst_gap_ms, max(gaps))
        figures.update(
            hp_iter_ms_median=round(med * 1e3, 2),
            hp_worst_gap_near_kill_ms=round(worst_gap_ms, 2),
            slot_reclaim_ms_worst=round(max(reclaim_ms), 1),
        )
        # Blocked would mean waiting on the dead client: the library's bound for that is the 100 ms
        # the issue allows a dead client's hold (its liveness check runs every 10 ms).  Measured:
        # 8.5-9.3 ms (one iteration); once, in a full CI-class run, 41.8 ms of host scheduling.
        assert worst_gap_ms < 100, f"HP stalled {worst_gap_ms:.1f} ms around an LP kill"
    finally:
        procs.close()
