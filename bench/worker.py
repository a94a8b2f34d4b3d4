#!/usr/bin/env python3
"""An unmodified-program stand-in: plain PyTorch, it never imports fikit.

HP models serve batch-1 requests (back to back, or Poisson arrivals with --rate); LP models train
or run batch inference. With --devices 0,1 the model is on each of those GPUs (cuda:0, cuda:1) and a
step is a step on each, queued one after the other (a process scheduled on several GPUs). With
--device fake it runs tests/fakecuda kernels instead of a model (bench/fake_workloads.py: CPU
rehearsals, no torch). The worker builds its model, then obeys a runner over a Unix socket
(--ctl PATH), one JSON object a line:

  worker -> {"ev": "built", ...}      model built (import/build times, whether libfikit.so is mapped)
  runner -> {"cmd": "warmup", "seconds": S}
  worker -> {"ev": "ready", ...}      warmed up; GPU memory cache released for LP (--release-mem)
  runner -> {"cmd": "run", "id": ID, "start_at": T, "duration_s": D}   T on CLOCK_MONOTONIC
            [+ "slices": [[T1, T1'], ...]: run only inside these, sleep between them]
  worker -> {"ev": "done", "id": ID, "records": [...]}   HP: [arrival, start, end] per request
                                                          (+ the library on/off with --toggle-ms);
                                                          LP: [start, end] per iteration
  runner -> {"cmd": "quit"}

Without --ctl it runs one window of --duration seconds after --warmup-s and writes --out JSON.
"""

from __future__ import annotations

import time

T_PROCESS = time.monotonic()

import argparse  # noqa: E402 - the process start time is taken first, to time the imports
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

import benchlib  # noqa: E402


def lib_mapped() -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any("libfikit" in line for line in f)
    except OSError:
        return False


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        t0 = time.monotonic()
        self.torch: Any = None
        if args.device == "fake":
            import fake_workloads as wl_mod
        else:
            import torch
            import workloads as wl_mod  # type: ignore[no-redef]

            self.torch = torch
        self.wl_mod: Any = wl_mod
        self.import_s = time.monotonic() - T_PROCESS
        self.device = args.device
        self.ordinals = [int(d) for d in args.devices.split(",")] if args.devices else None
        wl_mod.setup_determinism(args.seed)
        t1 = time.monotonic()
        self.wl = wl_mod.build_devices(args.model, args.device, self.ordinals, args.tiny, args.batch)
        self.sync()
        self.build_s = time.monotonic() - t1
        self.pinned: list[int] = []
        self.pinned_threads = 0
        if args.cpus:
            try:
                self.pinned_threads = benchlib.pin_all_threads(benchlib.parse_cpu_list(args.cpus))
                self.pinned = sorted(os.sched_getaffinity(0))
            except OSError as e:
                print(f"worker: cannot pin to {args.cpus}: {e}", file=sys.stderr)
        self.threads = wl_mod.set_threads_from_affinity()
        self.iters_total = 0
        self.last_usage: dict[str, float] = {}  # the last window's (usage_since)
        del t0

    def sync(self) -> None:
        self.wl.sync()

    def built_info(self) -> dict[str, Any]:
        gpu: Any = None
        if self.device == "cuda":
            with contextlib.suppress(Exception):
                names = [self.torch.cuda.get_device_name(i) for i in self.ordinals or [0]]
                gpu = names[0] if self.ordinals is None else names
        return {
            "ev": "built",
            "pid": os.getpid(),
            "model": self.wl.name,
            "role": self.wl.role,
            "batch": self.wl.batch,
            "import_s": round(self.import_s, 3),
            "build_s": round(self.build_s, 3),
            "preloaded": lib_mapped(),
            "gpu": gpu,
            "devices": self.ordinals,
            "pinned": self.pinned,
            "pinned_threads": self.pinned_threads,
            "threads": self.threads,
            "info": self.wl.info,
            "env": {
                k: os.environ.get(k)
                for k in (
                    "LD_PRELOAD",
                    "FIKIT_PRIO",
                    "FIKIT_DOMAIN",
                    "CUDA_VISIBLE_DEVICES",
                    "FIKIT_PASSTHROUGH",
                    "FIKIT_PROFILE",
                    "CUDA_MPS_PIPE_DIRECTORY",
                    "CUDA_MPS_CLIENT_PRIORITY",
                    "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
                )
                if os.environ.get(k)
            },
        }

    def release(self) -> None:
        if self.args.release_mem and self.device == "cuda":
            self.sync()
            self.torch.cuda.empty_cache()

    @staticmethod
    def library_switch(what: str) -> Any:
        """A function of one int that turns libfikit.so's `what` on (1) or off (0): measuring
        (fikit_set_measuring), the whole library (fikit_set_bypass, inverted) or quiet launches
        (fikit_set_quiet), found among the preloaded libraries' symbols."""
        import ctypes

        name = {"library": "fikit_set_bypass", "quiet": "fikit_set_quiet"}.get(what, "fikit_set_measuring")
        try:
            fn = getattr(ctypes.CDLL(None), name)
        except AttributeError as e:
            raise RuntimeError(f"--toggle-ms needs libfikit.so preloaded (no {name})") from e
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        if what == "library":
            return lambda on: fn(0 if on else 1)
        return fn

    def warmup(self, seconds: float) -> dict[str, Any]:
        t0 = time.monotonic()
        n = 0
        while n < self.args.warmup_min_iters or time.monotonic() - t0 < seconds:
            self.wl.step()
            self.sync()
            n += 1
        dt = time.monotonic() - t0
        self.release()
        mem = None
        if self.device == "cuda":
            mem = sum(int(self.torch.cuda.max_memory_allocated(i)) for i in self.ordinals or [0])
        return {"ev": "ready", "warmup_s": round(dt, 3), "warmup_iters": n, "max_mem_bytes": mem}

    def run_window(
        self, start_at: float, duration_s: float, wid: str, slices: list[list[float]] | None = None,
        toggle: tuple[float, str] | None = None,
    ) -> list[list[float]]:
        """Run from start_at for duration_s, or only inside each [start, end) of slices (between
        them the worker sleeps: slices let several groups of processes take turns on a GPU).
        toggle (ms, what) overrides --toggle-ms and --toggle-switch for this window alone, so that
        one process can run some windows as it is and split others into library-on and -off
        stretches (verify_multigpu's --floor-toggle-ms)."""
        ms, what = toggle if toggle is not None else (self.args.toggle_ms, self.args.toggle_switch)
        if slices is not None and self.wl.role == "hp" and ms > 0:
            raise ValueError("--toggle-ms switches inside one window: it takes no slices")
        spans = [(start_at, start_at + duration_s)]
        if slices is not None:
            spans = [(float(a), float(b)) for a, b in slices]
        recs: list[list[float]] = []
        before = usage_now()
        for i, (a, b) in enumerate(spans):
            now = time.monotonic()
            if a > now:
                time.sleep(a - now)
            self.run_span(a, b, f"{wid}:{i}" if i else wid, recs, ms, what)
        self.last_usage = usage_since(before, len(recs))
        self.iters_total += len(recs)
        self.release()
        return recs

    def run_span(
        self, start_at: float, end_at: float, wid: str, recs: list[list[float]], toggle_ms: float = 0.0,
        toggle_switch: str = "measuring",
    ) -> None:
        """Requests (HP) or iterations (LP) from start_at until end_at, appended to recs."""
        step = self.wl.step
        sync = self.sync
        rate = self.args.rate if self.wl.role == "hp" else 0.0
        if rate > 0:
            rng = random.Random(f"{self.args.seed}:{wid}")
            t_arr = start_at
            while True:
                t_arr += rng.expovariate(rate)
                if t_arr >= end_at:
                    break
                now = time.monotonic()
                if t_arr > now:
                    time.sleep(t_arr - now)
                t_s = time.monotonic()
                step()
                sync()
                t_e = time.monotonic()
                recs.append([round(t_arr, 6), round(t_s, 6), round(t_e, 6)])
        elif self.wl.role == "hp" and toggle_ms > 0:
            # One process, libfikit.so's measuring (or all of it) on and off in alternate stretches
            # of toggle_ms (switched between requests only): a record's fourth field says which (1: on).
            toggle = self.library_switch(toggle_switch)
            seg_s, state = toggle_ms / 1000.0, -1
            while True:
                t_s = time.monotonic()
                if t_s >= end_at:
                    break
                want = 1 - int((t_s - start_at) / seg_s) % 2
                if want != state:
                    toggle(want)
                    state = want
                step()
                sync()
                t_e = time.monotonic()
                recs.append([round(t_s, 6), round(t_s, 6), round(t_e, 6), state])
            toggle(1)
        elif self.wl.role == "hp":
            while True:
                t_s = time.monotonic()
                if t_s >= end_at:
                    break
                step()
                sync()
                t_e = time.monotonic()
                recs.append([round(t_s, 6), round(t_s, 6), round(t_e, 6)])
        else:
            while True:
                t_s = time.monotonic()
                if t_s >= end_at:
                    break
                step()
                sync()
                recs.append([round(t_s, 6), round(time.monotonic(), 6)])


def usage_now() -> dict[str, float]:
    """CPU time, page faults and context switches so far: the whole process's (every thread: the
    program's, the CUDA driver's, MPS's, libfikit.so's) and the calling thread's."""
    out: dict[str, float] = {}
    for scope, who in (("proc", resource.RUSAGE_SELF), ("thread", resource.RUSAGE_THREAD)):
        r = resource.getrusage(who)
        out.update({f"{scope}_cpu_s": r.ru_utime + r.ru_stime, f"{scope}_minflt": r.ru_minflt,
                    f"{scope}_nvcsw": r.ru_nvcsw, f"{scope}_nivcsw": r.ru_nivcsw})  # fmt: skip
    out["wall_s"] = time.monotonic()
    return out


def usage_since(before: dict[str, float], n: int) -> dict[str, float]:
    """What a window used (usage_now() then and now), and its records (requests or iterations): two
    processes whose requests differ in time differ here in where it went (CPU, faults, switches)."""
    now = usage_now()
    out = {k: round(now[k] - v, 6) for k, v in before.items()}
    out["n"] = n
    return out


def send(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall((json.dumps(obj) + "\n").encode())


def serve(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.ctl)
    send(sock, {"ev": "hello", "pid": os.getpid(), "tag": args.tag})
    try:
        w = Worker(args)
    except Exception:
        send(sock, {"ev": "fatal", "error": traceback.format_exc()[-4000:]})
        return 3
    send(sock, w.built_info())
    rfile = sock.makefile("r", encoding="utf-8")
    for line in rfile:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        cmd = msg.get("cmd")
        try:
            if cmd == "warmup":
                send(sock, w.warmup(float(msg.get("seconds", args.warmup_s))))
            elif cmd == "run":
                wid = str(msg.get("id"))
                tog = msg.get("toggle")
                toggle = (float(tog["ms"]), str(tog["switch"])) if tog else None
                recs = w.run_window(
                    float(msg["start_at"]), float(msg["duration_s"]), wid, msg.get("slices"), toggle
                )
                send(sock, {"ev": "done", "id": wid, "records": recs, "usage": w.last_usage})
            elif cmd == "quit":
                send(sock, {"ev": "bye", "iters_total": w.iters_total})
                break
            else:
                send(sock, {"ev": "error", "id": msg.get("id"), "error": f"unknown command {cmd!r}"})
        except Exception:
            send(sock, {"ev": "error", "id": msg.get("id"), "error": traceback.format_exc()[-4000:]})
    with contextlib.suppress(OSError):
        sock.close()
    return 0


def standalone(args: argparse.Namespace) -> int:
    w = Worker(args)
    out = w.built_info()
    out.update(w.warmup(args.warmup_s))
    start = time.monotonic() + 0.05
    recs = w.run_window(start, args.duration, "standalone")
    out.update({"ev": "done", "start_at": start, "duration_s": args.duration, "records": recs})
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu", "fake"])
    p.add_argument("--devices", default="", help="GPU ordinals, e.g. 0,1: the model on each (a step on each)")
    p.add_argument("--tiny", action="store_true", help="small inputs (CPU self-checks)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rate", type=float, default=0.0, help="HP Poisson arrival rate, req/s (0: back to back)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", default="", help="pin (every thread) to these CPUs once the model is built")
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--warmup-min-iters", type=int, default=5)
    p.add_argument("--release-mem", action="store_true", help="torch.cuda.empty_cache() after each window")
    p.add_argument("--toggle-ms", type=float, default=0.0,
                   help="HP back to back: libfikit.so's measuring off and on every N ms (overhead_probe)")
    p.add_argument("--toggle-switch", choices=["measuring", "library", "quiet"], default="measuring",
                   help="what --toggle-ms turns off: measuring, the whole library (launches bypass it), "
                        "or quiet launches (every launch publishes)")
    p.add_argument("--ctl", default="", help="Unix socket of the runner")
    p.add_argument("--tag", default="")
    p.add_argument("--duration", type=float, default=3.0, help="standalone: window length")
    p.add_argument("--out", default="", help="standalone: result file")
    args = p.parse_args(argv)
    if args.ctl:
        return serve(args)
    return standalone(args)


if __name__ == "__main__":
    sys.exit(main())
