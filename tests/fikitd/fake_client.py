"""A stand-in for a libfikit.so client: claims a slot file, registers, stays connected until stdin closes.

    python fake_client.py DOMAIN_DIR SLOT SOCKET PROG PRIO [--kernels N] [--claim-pid PID] [--uid UID]

Prints the daemon's reply as one JSON line.  The slot file is written with the layout
fikitd/shm.py reads from libfikit.so, as the library itself would write it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from fikitd import shm


def slot_view(pid: int) -> tuple[bytearray, shm._View]:
    """A slot's bytes with the header a library client writes (magic, version, size, pid), and a view
    of them to set the rest."""
    lay = shm.layout()
    buf = bytearray(lay.sizes["slot"])
    v = shm._View(lay, "slot", buf)
    v.set("magic", shm.SLOT_MAGIC)
    v.set("version", lay.version)
    v.set("slot_size", lay.sizes["slot"])
    v.set("pid", pid)
    return buf, v


def slot_bytes(pid: int, uid: int, prio: int, prog: str, kernels: int) -> bytes:
    lay = shm.layout()
    buf, v = slot_view(pid)
    v.set("uid", uid)
    v.set("prio_req", prio)
    v.set("prog", prog)
    ring = lay.field("kstat", "dur_ring_ns").count
    for k in range(kernels):
        e = v.sub("ktab", k)
        e.set("id", 0x1000 + k)
        e.set("name", f"kernel_{k}")
        e.set("count", 100 + k)
        e.set("dur_n", 4)
        e.set("dur_sum_ns", 4 * 10_000)
        e.set("dur_ring_ns", [9_000, 10_000, 11_000, 10_000] + [0] * (ring - 4))
        e.set("grid", [k + 1, 1, 1])
        e.set("block", [256, 1, 1])
    v.set("path_launches", [sum(100 + k for k in range(kernels)), 0, 0, 0])
    v.set("ktab_used", kernels)
    return bytes(buf)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("domain", type=Path)
    p.add_argument("slot", type=int)
    p.add_argument("socket")
    p.add_argument("prog")
    p.add_argument("prio", type=int)
    p.add_argument("--kernels", type=int, default=0)
    p.add_argument("--claim-pid", type=int)
    p.add_argument("--uid", type=int)
    a = p.parse_args()
    path = a.domain / f"slot.{a.slot}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, slot_bytes(a.claim_pid or os.getpid(), os.getuid(), a.prio, a.prog, a.kernels))
    os.close(fd)
    if a.uid is not None:
        os.setgroups([])
        os.setgid(a.uid)
        os.setuid(a.uid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(a.socket)
    msg = {"v": 1, "op": "register", "pid": os.getpid(), "slot": a.slot, "prio": a.prio, "gpu": 0,
           "prog": a.prog}
    s.sendall(json.dumps(msg).encode() + b"\n")
    reply = s.makefile("rb").readline()
    sys.stdout.write(reply.decode())
    sys.stdout.flush()
    sys.stdin.read()  # hold the connection (and the slot) until the test closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
