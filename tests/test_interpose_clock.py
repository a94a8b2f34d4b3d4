"""interpose/src/clock.c: fikit_now_ns is CLOCK_MONOTONIC, whether it reads the kernel's clock or
scales the TSC between anchors (the default where the kernel's clocksource is the TSC).

Every process compares its timestamps with other processes' (an LP with its HP's predictions,
fikitd with heartbeats), and held times are differences of two readings on one thread: the clock
must agree with the kernel's across processes and never step back on a thread, across the
anchors it takes every 250 us and while several threads read it at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in a process of its own: readings of fikit_now_ns bracketed by the kernel's clock, on
# several threads for longer than many anchors last.
PROBE = r"""
import ctypes, json, sys, threading, time
lib = ctypes.CDLL(sys.argv[1])
now = lib.fikit_now_ns
now.restype = ctypes.c_uint64
out = {"outside": 0, "worst_ns": 0, "backwards": 0, "reads": 0}
lock = threading.Lock()

def run(seconds):
    outside = worst = backwards = reads = 0
    last = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a = time.monotonic_ns()
        f = now()
        b = time.monotonic_ns()
        reads += 1
        if f < last:
            backwards += 1
        last = f
        off = a - f if f < a else (f - b if f > b else 0)
        worst = max(worst, off)
        if off > 1000:
            outside += 1
    with lock:
        out["outside"] += outside
        out["worst_ns"] = max(out["worst_ns"], worst)
        out["backwards"] += backwards
        out["reads"] += reads

threads = [threading.Thread(target=run, args=(0.4,)) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""


@pytest.mark.parametrize("clock", ["default", "kernel"])
def test_clock_is_the_kernels_monotonic_clock(libfikit: Path, clock: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIKIT_")}
    if clock == "kernel":
        env["FIKIT_CLOCK"] = "kernel"
    p = subprocess.run([sys.executable, "-c", PROBE, str(libfikit)], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout)
    assert r["reads"] > 1000, r
    assert r["backwards"] == 0, f"the clock stepped back on a thread: {r}"
    # Between two kernel readings on the same thread, to a microsecond (the TSC's pairing error
    # is tens of ns; a wrong scale would be off by far more, growing with time).
    assert r["outside"] == 0, f"readings outside the kernel's clock by more than 1 us: {r}"
