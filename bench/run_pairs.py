#!/usr/bin/env python3
"""HP/LP pairs side by side under every sharing mode (issues 4, 9, 11), resumable.

For each pair the runner starts, once, every worker process the selected modes need (a plain HP
and LP for solo and time-slicing, preloaded ones for solo_preload, MPS clients with and without
client priority / SM cap, and fikit clients), warms them up, and then runs short timed windows in
an interleaved order: per repetition, `solo` first and the other modes rotated, every window
driving only the processes of its mode while the others sleep. Each (pair, mode, repetition)
becomes one JSON line in OUT/raw.jsonl; lines already there are skipped, so a later call resumes.

fikit modes go through the product by default (--via auto): fikitd in the foreground with a
private config ([mps] mode = "manage"), workers started with `fikitctl run --prio high|low`,
and `set_mode` between fikit and fikit_strict windows. If the daemon does not come up, or its
clients do not start, the runner falls back to --via domain: it runs MPS itself, creates
self-granted domains with fikitd.shm and sets LD_PRELOAD / FIKIT_PRIO / FIKIT_DOMAIN directly.

Pair syntax: HP[%RATE]:LP[@PRIO][+LP[@PRIO]...]  e.g. bert:vgg16_infer, resnet50%100:vgg16_infer
(Poisson arrivals at 100 req/s), bert:resnet50_train@normal+vgg16_infer (three levels).

    python3 bench/run_pairs.py --out bench/results/X --lib build/gpu/interpose/libfikit.so \\
        --pairs bert:vgg16_infer,resnet50:resnet50_train --budget-s 540
    python3 bench/run_pairs.py --device cpu --dry-run --pairs resnet50:resnet50_train \\
        --modes solo,mps --window-s 1 --out /tmp/p     # CPU self-check, MPS skipped
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import ctl
import workloads_catalog

ALL_MODES = list(benchlib.MODES)
# fikit with LP co-running beside busy HP on a green context of corun_sm_pct of the SMs (issue 11), in a
# self-granted domain: `fikit_corun` expands to one mode per --corun-sm-pct value, `fikit_corunNN` names one
OPTIONAL_MODES = [benchlib.CORUN_MODE, benchlib.SOLO_MPS_MODE]
# fikit's gap filling alone (corun_sm_pct = 0) in a self-granted domain: the `fikit` mode runs fikitd's
# defaults (an "auto" co-running share from issue 11 until 2026-11-26, gap filling since), or the share
# --daemon-corun-sm-pct gives; this keeps issue 11's `gapfill` variant whatever the daemon does.
GAPFILL_MODE = "fikit_gapfill"
DEFAULT_MODES = [*ALL_MODES, benchlib.CORUN_MODE]
# Modes whose HP and LP each run alone, in two windows: plain, under libfikit.so, or as MPS clients
# (solo_mps tells MPS's own cost from fikit's: every fikit mode runs its clients under MPS).
SOLO_MODES = ("solo", "solo_preload", benchlib.SOLO_MPS_MODE)
# Issue 9's pairs (>= 8) ordered by value: the two HP-b1-back-to-back pairs next to LP kernels over 300 us
# (issue 11's core question) first, then the other back-to-back pairs, Poisson arrivals (CNN, transformer),
# a CUDA-graph HP, a torch.compile HP, three priority levels, four LP clients.
DEFAULT_PAIRS = [
    "bert:vgg16_infer",
    "resnet50:resnet50_train",
    "vit_b_16:gpt2_train",
    "resnet50%100:vgg16_infer",
    "gpt2:resnet50_train",
    "bert%60:vgg16_train",
    "resnet50_graph:resnet50_train",
    "bert_compile:gpt2_train",
    "bert:resnet50_train@normal+vgg16_infer",
    "resnet50:resnet50_train+vgg16_infer+gpt2_train+bert_train",
]
PER_LP_WARMUP_EXTRA_S = 0.8  # startup model: LP workers warm one at a time, each warmup_s plus this
OLD_TIMING_LP_WORKERS = 6  # timing.json entries without counts came from 6 groups of one LP each
PRIO_NUM = {"high": 0, "normal": 1, "low": 2}


# ---------------------------------------------------------------------------------------------- specs


@dataclass
class Pair:
    spec: str
    hp: str
    rate: float
    lps: list[tuple[str, str]]  # (model, fikit priority)

    @property
    def lp_models(self) -> list[str]:
        return [m for m, _ in self.lps]


def parse_pair(spec: str) -> Pair:
    if ":" not in spec:
        raise ValueError(f"pair {spec!r}: expected HP:LP")
    hp_tok, lp_tok = spec.split(":", 1)
    rate = 0.0
    if "%" in hp_tok:
        hp_tok, r = hp_tok.split("%", 1)
        rate = float(r)
    lps: list[tuple[str, str]] = []
    for tok in lp_tok.split("+"):
        prio = "low"
        if "@" in tok:
            tok, prio = tok.split("@", 1)
        if prio not in PRIO_NUM or prio == "high":
            raise ValueError(f"pair {spec!r}: LP priority must be normal or low, not {prio!r}")
        lps.append((tok, prio))
    for m in [hp_tok] + [m for m, _ in lps]:
        if m not in workloads_catalog.CATALOG:
            raise ValueError(
                f"pair {spec!r}: unknown model {m!r}; known: {', '.join(workloads_catalog.CATALOG)}"
            )
    if workloads_catalog.CATALOG[hp_tok][0] != "hp":
        raise ValueError(f"pair {spec!r}: {hp_tok} is not an HP (batch-1 inference) model")
    return Pair(spec, hp_tok, rate, lps)


def smcap_of(mode: str, default_pct: int) -> int | None:
    if not mode.startswith("mps_prio_smcap"):
        return None
    rest = mode[len("mps_prio_smcap") :]
    return int(rest) if rest else default_pct


def corun_of(mode: str, default_pct: int) -> int | None:
    if not mode.startswith("fikit_corun"):
        return None
    rest = mode[len("fikit_corun") :]
    return int(rest) if rest else default_pct


def parse_pcts(text: str, what: str) -> list[int]:
    vals = [int(x) for x in str(text).split(",") if x.strip()]
    if not vals or any(not 1 <= v <= 100 for v in vals):
        raise ValueError(f"{what}: expected percentages 1..100, comma separated, got {text!r}")
    return vals


def expand_modes(modes: list[str], smcaps: list[int], coruns: list[int]) -> list[str]:
    """`mps_prio_smcap` -> one mode per SM cap, `fikit_corun` -> one per co-run share (order kept)."""
    out: list[str] = []
    for m in modes:
        if m == "mps_prio_smcap":
            new = [f"mps_prio_smcap{c}" for c in smcaps]
        elif m == "fikit_corun":
            new = [f"fikit_corun{c}" for c in coruns]
        else:
            new = [m]
        out.extend(x for x in new if x not in out)
    return out


def check_mode(mode: str) -> None:
    if mode in ALL_MODES or mode in OPTIONAL_MODES or mode == GAPFILL_MODE:
        return
    rest = mode[len("fikit_corun") :]
    if mode.startswith("fikit_corun") and rest.isdigit() and 1 <= int(rest) <= 100:
        return
    if mode.startswith("mps_prio_smcap") and mode[len("mps_prio_smcap") :].isdigit():
        pct = int(mode[len("mps_prio_smcap") :])
        if 1 <= pct <= 100:
            return
    raise ValueError(
        f"unknown mode {mode!r}; known: {', '.join(ALL_MODES + OPTIONAL_MODES)} "
        f"(and mps_prio_smcapNN, fikit_corunNN, {GAPFILL_MODE})"
    )


@dataclass
class Group:
    """Processes that share one launch configuration."""

    name: str
    mps: bool = False
    preload: bool = False
    fikit: bool = False  # scheduled by fikit (daemon or domain)
    lp_mps_prio: bool = False  # LP clients get CUDA_MPS_CLIENT_PRIORITY=1 (low ones)
    smcap: int | None = None
    sched_mode: str = "fikit"  # for a domain group
    corun: int = 0  # corun_sm_pct of a domain group
    force_domain: bool = False  # always a self-granted domain, even when fikitd runs
    need_hp: bool = False
    need_lp: bool = False
    hp: ctl.WorkerProc | None = None
    lps: list[ctl.WorkerProc] = field(default_factory=list)
    domain: Path | None = None
    error: str | None = None
    via: str = "none"

    def workers(self) -> list[ctl.WorkerProc]:
        return ([self.hp] if self.hp else []) + self.lps


def mode_groups(mode: str, via: str, default_smcap: int, default_corun: int = 50) -> tuple[str, str]:
    """(HP group, LP group) of a mode."""
    if mode in ("solo", "timeslice"):
        return "plain", "plain"
    if mode == "solo_preload":
        return "preload", "preload"
    if mode in ("mps", benchlib.SOLO_MPS_MODE):
        return "mps", "mps"
    if mode == "mps_prio":
        return "mps", "mpsprio"
    if mode.startswith("mps_prio_smcap"):
        return "mps", f"smcap{smcap_of(mode, default_smcap)}"
    if mode == "fikit":
        return "fikit", "fikit"
    if mode == "fikit_strict":
        g = "fikit" if via == "daemon" else "fikit_strict"
        return g, g
    if mode.startswith("fikit_corun"):
        g = f"fikit_corun{corun_of(mode, default_corun)}"
        return g, g
    if mode == GAPFILL_MODE:
        return mode, mode
    raise ValueError(mode)


def make_group(name: str, corun_pct: int = 0) -> Group:
    if name == "plain":
        return Group(name)
    if name == "preload":
        return Group(name, preload=True, fikit=True)
    if name == "mps":
        return Group(name, mps=True)
    if name == "mpsprio":
        return Group(name, mps=True, lp_mps_prio=True)
    if name.startswith("smcap"):
        return Group(name, mps=True, lp_mps_prio=True, smcap=int(name[5:]))
    if name == "fikit":
        return Group(name, mps=True, preload=True, fikit=True, lp_mps_prio=True, sched_mode="fikit")
    if name == "fikit_strict":
        return Group(name, mps=True, preload=True, fikit=True, lp_mps_prio=True, sched_mode="strict")
    if name == GAPFILL_MODE:
        return Group(name, mps=True, preload=True, fikit=True, lp_mps_prio=True, sched_mode="fikit", corun=0,
                     force_domain=True)
    if name.startswith("fikit_corun"):
        return Group(
            name,
            mps=True,
            preload=True,
            fikit=True,
            lp_mps_prio=True,
            sched_mode="fikit",
            corun=corun_of(name, corun_pct) or corun_pct,
            force_domain=True,
        )
    raise ValueError(name)


def share_value(text: str) -> int | str:
    """--daemon-corun-sm-pct: "auto" or 0-100, as fikitd's config takes it."""
    if text == "auto":
        return text
    if text.isdigit() and 0 <= int(text) <= 100:
        return int(text)
    raise SystemExit(f"run_pairs: --daemon-corun-sm-pct {text!r}: expected \"auto\" or an integer 0-100")


def parse_env(items: list[str]) -> dict[str, str]:
    """KEY=VALUE options; a malformed one is an error that names it."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise SystemExit(f"run_pairs: --fikit-hp-env {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def needs_mps(modes: list[str]) -> bool:
    """From the groups, not the names: solo_mps once ran without MPS because its name says "solo"."""
    return any(make_group(g).mps for m in modes for g in mode_groups(m, "domain", 60))


def windows_of(mode: str) -> int:
    return 2 if mode in SOLO_MODES else 1


# ---------------------------------------------------------------------------------------------- daemon


class Daemon:
    """fikitd in the foreground with a private configuration."""

    def __init__(
        self,
        base: Path,
        lib: str | None,
        mps: bool,
        budget_us: int | None,
        template: str | None,
        fikitd_cmd: list[str],
        extra_env: dict[str, str] | None = None,
        high_users: tuple[str, ...] = ("root",),
        corun_sm_pct: str | None = None,
    ) -> None:
        self.base = base
        self.corun_sm_pct = corun_sm_pct  # None: fikitd's default
        self.extra_env = extra_env or {}  # e.g. FIKIT_FAKE_GPUS for a CPU rehearsal
        self.high_users = high_users
        self.lib = lib
        self.rt = base / "run"
        self.state = base / "state"
        self.log = base / "log"
        self.pipe = base / "mps_pipe"
        self.mps_log = base / "mps_log"
        self.cfg = base / "fikit.toml"
        self.sock = self.rt / "fikitd.sock"
        self.domain = self.rt / "gpu0"
        self.mps = mps
        self.budget_us = budget_us
        self.template = template
        self.cmd = fikitd_cmd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "fikitd.log"
        self.error: str | None = None
        self.mode: str | None = None

    def config_text(self) -> str:
        vals = {
            "runtime_dir": self.rt,
            "state_dir": self.state,
            "log_dir": self.log,
            "mps_pipe": self.pipe,
            "mps_log": self.mps_log,
            "mps_mode": "manage" if self.mps else "none",
            "sched_mode": "fikit",
            "budget_line": f"budget_us = {self.budget_us}" if self.budget_us is not None else "",
        }
        if self.corun_sm_pct is not None:
            v = share_value(self.corun_sm_pct)
            vals["budget_line"] += "\ncorun_sm_pct = " + (str(v) if isinstance(v, int) else '"auto"')
        if self.template:
            return Path(self.template).read_text(encoding="utf-8").format(**vals)
        return (
            "[paths]\n"
            f'runtime_dir = "{vals["runtime_dir"]}"\n'
            f'state_dir = "{vals["state_dir"]}"\n'
            f'log_dir = "{vals["log_dir"]}"\n\n'
            "[mps]\n"
            f'mode = "{vals["mps_mode"]}"\n'
            f'pipe_dir = "{vals["mps_pipe"]}"\n'
            f'log_dir = "{vals["mps_log"]}"\n\n'
            "[scheduler]\n"
            f'mode = "{vals["sched_mode"]}"\n'
            # no corun_sm_pct unless --daemon-corun-sm-pct: the fikit modes run fikitd's default
            f"{vals['budget_line']}\n\n"
            "[access]\n"
            f"high_users = {json.dumps(list(self.high_users))}\n\n"
            "[metrics]\n"
            "enabled = false\n"
        )

    def env(self) -> dict[str, str]:
        env = base_env()
        env.pop("NOTIFY_SOCKET", None)  # not under systemd here: no sd_notify
        env["FIKIT_CONFIG"] = str(self.cfg)
        env["FIKIT_SOCKET"] = str(self.sock)
        if self.lib:
            env["FIKIT_LIBRARY"] = self.lib
        env["PYTHONPATH"] = str(benchlib.REPO_ROOT) + (
            ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> bool:
        for d in (self.rt, self.state, self.log, self.pipe, self.mps_log):
            d.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(self.config_text(), encoding="utf-8")
        try:
            self.proc = benchlib.popen_logged(
                [*self.cmd, "--config", str(self.cfg)],
                self.log_path,
                append=True,
                env=self.env(),
                cwd=str(benchlib.REPO_ROOT),
                start_new_session=True,
            )
        except OSError as e:
            self.error = f"cannot start fikitd: {e!r}"
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.error = f"fikitd exited with {self.proc.returncode}: {self.log_tail()}"
                return False
            if self.sock.exists():
                try:
                    st = self.request({"op": "status"})
                except OSError:
                    st = None
                if st and st.get("ok"):
                    res = st.get("result", {})
                    mps_state = (res.get("mps") or {}).get("state")
                    if self.mps and mps_state not in ("running", "attached"):
                        if mps_state in ("unavailable", "disabled", "stopped", "failed"):
                            self.error = f"fikitd is up but its MPS is {mps_state}: {res.get('mps')}"
                            return False
                        time.sleep(0.5)
                        continue
                    self.mode = "fikit"
                    return True
            time.sleep(0.3)
        self.error = f"fikitd not ready within {timeout:.0f}s: {self.log_tail()}"
        return False

    def request(self, obj: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
        msg = {"v": 1, **obj}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.sock))
            s.sendall((json.dumps(msg) + "\n").encode())
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        line = buf.split(b"\n", 1)[0]
        return json.loads(line) if line else None

    def set_mode(self, mode: str) -> tuple[bool, str]:
        if self.mode == mode:
            return True, "unchanged"
        try:
            r = self.request({"op": "set_mode", "gpu": 0, "mode": mode})
        except (OSError, json.JSONDecodeError) as e:
            return False, f"set_mode: {e!r}"
        if r and r.get("ok"):
            self.mode = mode
            return True, "ok"
        return False, f"set_mode refused: {r}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5)
        # make sure the MPS it managed is gone (harmless if it already quit it)
        if self.mps and shutil.which("nvidia-cuda-mps-control") and (self.pipe / "control").exists():
            env = dict(os.environ)
            env.update(
                {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe), "CUDA_MPS_LOG_DIRECTORY": str(self.mps_log)}
            )
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    ["nvidia-cuda-mps-control"],
                    input="quit\n",
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=20,
                    check=False,
                )

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


base_env = benchlib.base_env


def mps_clients(pipe: Path, log: Path) -> list[int] | None:
    """PIDs of every client of every MPS server behind this pipe directory (None if unknown)."""
    if not shutil.which("nvidia-cuda-mps-control"):
        return None
    pids: list[int] = []
    rc, servers = benchlib.mps_ask(pipe, log, "get_server_list")
    if rc == -1:
        return None
    for srv in servers.split():
        if srv.isdigit():
            rc, clients = benchlib.mps_ask(pipe, log, f"get_client_list {srv}")
            if rc == -1:
                return None
            pids.extend(int(x) for x in clients.split() if x.isdigit())
    return pids


# ---------------------------------------------------------------------------------------------- runner


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.t0 = time.monotonic()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.raw = self.out / "raw.jsonl"
        self.meta = self.out / "pairs_meta.jsonl"
        self.timing_path = self.out / "timing.json"
        self.tiny = args.device == "cpu" and not args.full_size
        self.lib = benchlib.find_lib(args.lib)
        if self.lib and not Path(self.lib).is_file():
            self.lib = None
        self.base = Path(tempfile.mkdtemp(prefix="fkb", dir="/tmp"))  # short: Unix socket paths
        self.nomps = self.base / "nomps"
        self.nomps.mkdir()
        self.mps = benchlib.Mps(self.base, dry_run=args.dry_run or args.device == "cpu")
        self.mps_up = False
        self.daemon: Daemon | None = None
        self.via = "domain"
        self.via_note = ""
        self.stats_dir = self.out / "stats"
        self.logs = self.out / "logs"
        self.fikit_hp_env = parse_env(args.fikit_hp_env)
        given = args.daemon_corun_sm_pct
        self.daemon_share = share_value(given) if given is not None else benchlib.fikitd_default_share()
        self.hp_cores = ",".join(map(str, benchlib.parse_cpus(args.hp_cores)))
        self.lp_cores = ",".join(map(str, benchlib.parse_cpus(args.lp_cores)))
        self.stop_reason: str | None = None
        self.windows_done = 0
        on_gpu = args.device == "cuda" and not args.dry_run
        self.clocks = benchlib.ClockSampler() if on_gpu else benchlib.ClockSampler.off()
        self.smcaps = parse_pcts(args.smcap, "--smcap")
        self.coruns = parse_pcts(args.corun_sm_pct, "--corun-sm-pct")

    # ------------------------------------------------------------------------------------- time
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.a.budget_s - self.elapsed()

    def window_cost(self) -> float:
        return self.a.window_s + self.a.discard_s + self.a.window_overhead_s

    def per_lp_s(self) -> float:
        return self.a.warmup_s + PER_LP_WARMUP_EXTRA_S

    def startup_estimate(self, pair: Pair, modes: list[str] | None = None) -> float:
        """Model: a base (imports and model builds, in parallel) plus the LP workers' serial warm-ups.

        The base comes from the largest measured startup (timing.json here, else --timing-from),
        less its serial warm-ups; LP workers = LP models x the LP groups the modes need."""
        base = 30.0 if self.a.device == "cuda" else 15.0
        for path in (self.timing_path, Path(self.a.timing_from) if self.a.timing_from else None):
            if path is None:
                continue
            with contextlib.suppress(OSError, json.JSONDecodeError, ValueError, TypeError):
                t = json.loads(path.read_text())
                runs = t.get("runs") or [
                    {"s": s, "lp_workers": OLD_TIMING_LP_WORKERS} for s in t.get("startups_s", [])
                ]
                bases = [float(r["s"]) - self.per_lp_s() * int(r["lp_workers"]) for r in runs[-8:]]
                if bases:
                    base = max(bases)
                    break
        via = "domain" if self.a.via == "domain" else "daemon"  # before the control plane is up
        lp_groups = {mode_groups(m, via, self.smcaps[0], self.coruns[0])[1] for m in (modes or ["solo"])}
        est = base + self.per_lp_s() * len(pair.lps) * len(lp_groups)
        if any("compile" in m for m in [pair.hp, *pair.lp_models]):
            est += 60.0
        return est

    def record_startup(self, seconds: float, workers: int, lp_workers: int) -> None:
        t: dict[str, Any] = {}
        with contextlib.suppress(OSError, json.JSONDecodeError, ValueError):
            t = json.loads(self.timing_path.read_text())
        t.setdefault("startups_s", []).append(round(seconds, 1))
        t["startup_s_max"] = max(t["startups_s"][-5:])
        t.setdefault("runs", []).append(
            {
                "s": round(seconds, 1),
                "workers": workers,
                "lp_workers": lp_workers,
                "warmup_s": self.a.warmup_s,
            }
        )
        benchlib.write_json(self.timing_path, t)

    # ------------------------------------------------------------------------------------- control plane
    def setup_control_plane(self, modes: list[str]) -> None:
        need_mps = needs_mps(modes)
        need_fikit = any(m.startswith("fikit") or m == "solo_preload" for m in modes)
        if need_fikit and self.lib is None and not self.a.dry_run:
            self.via_note = "libfikit.so not found: fikit modes will fail"
        if need_fikit and self.a.via in ("auto", "daemon"):
            d = Daemon(
                self.base,
                self.lib,
                mps=need_mps and not self.mps.dry_run,
                budget_us=self.a.budget_us,
                template=self.a.daemon_config,
                fikitd_cmd=self.a.fikitd_cmd.split(),
                corun_sm_pct=self.a.daemon_corun_sm_pct,
            )
            print(f"[control] starting fikitd ({' '.join(d.cmd)} --config {d.cfg})", flush=True)
            if d.start():
                self.daemon = d
                self.via = "daemon"
                self.mps_up = d.mps
                print(f"[control] fikitd ready (MPS {'managed by fikitd' if d.mps else 'off'})", flush=True)
            else:
                print(f"[control] fikitd failed: {d.error}", flush=True)
                self.via_note = f"fikitd failed, fell back to --via domain: {d.error}"[:2000]
                d.stop()
                shutil.copy(d.log_path, self.out / "fikitd.failed.log") if d.log_path.exists() else None
                if self.a.via == "daemon":
                    raise SystemExit("run_pairs: --via daemon and fikitd did not start")
        if self.daemon is None:
            self.via = "domain"
            if need_mps:
                ok = self.mps.start()
                self.mps_up = ok
                print(
                    f"[control] MPS {'started' if ok else 'NOT started: ' + str(self.mps.error)}", flush=True
                )

    def mps_env(self) -> dict[str, str]:
        if self.daemon is not None:
            return {
                "CUDA_MPS_PIPE_DIRECTORY": str(self.daemon.pipe),
                "CUDA_MPS_LOG_DIRECTORY": str(self.daemon.mps_log),
            }
        return self.mps.env()

    def mps_dirs(self) -> tuple[Path, Path]:
        if self.daemon is not None:
            return self.daemon.pipe, self.daemon.mps_log
        return self.mps.pipe, self.mps.log

    def fikitctl(self) -> list[str]:
        if self.a.fikitctl_cmd:
            return self.a.fikitctl_cmd.split()
        exe = shutil.which("fikitctl")
        if exe:
            return [exe]
        return [sys.executable, "-m", "cli"]

    def teardown(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            # appended: a folder filled by several invocations keeps every run's share decisions
            with contextlib.suppress(OSError), open(self.out / "fikitd.log", "ab") as dst:
                dst.write(self.daemon.log_path.read_bytes())
        self.mps.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------------------------- workers
    def spawn_group(self, pair: Pair, g: Group, idx: int) -> None:
        """Start g's HP and/or LP workers (not waiting for them)."""
        via = "domain" if g.force_domain else self.via
        g.via = via if g.fikit else "none"
        if g.fikit and self.lib is None and not self.a.dry_run:
            g.error = "libfikit.so not found (--lib)"
            return
        if g.mps and not self.mps_up and not self.mps.dry_run:
            g.error = f"MPS is not running: {self.mps.error or self.via_note}"
            return
        if g.fikit and via == "domain" and self.lib is not None:
            g.domain = self.base / f"dom-{idx}-{g.name}"
            try:
                benchlib.create_domain(
                    g.domain, self.lib, mode=g.sched_mode, budget_us=self.a.budget_us, corun_sm_pct=g.corun
                )
            except Exception as e:
                g.error = f"cannot create a self-granted domain: {e!r}"
                return
        elif g.fikit and via == "daemon" and self.daemon is not None:
            g.domain = self.daemon.domain
        members: list[tuple[str, str, str]] = []  # (role, model, fikit prio)
        if g.need_hp:
            members.append(("hp", pair.hp, "high"))
        if g.need_lp:
            members.extend(("lp", m, prio) for m, prio in pair.lps)
        sock_dir = self.base / "ctl"
        log_dir = self.logs / safe(pair.spec)
        n_lp = 0
        for j, (role, model, prio) in enumerate(members):
            tag = f"{g.name}-hp-{model}" if role == "hp" else f"{g.name}-lp{n_lp}-{model}"
            n_lp += role == "lp"
            w = ctl.WorkerProc(tag, model, role, sock_dir, log_dir)
            # short (Unix socket paths) and unique: fikit_corun50 and fikit_corun70 share 6 letters
            digits = "".join(c for c in g.name if c.isdigit())
            w.sock_path = sock_dir / f"{idx}{g.name[:6]}{digits}{role}{j}.sock"
            cpus = self.hp_cores if role == "hp" else self.lp_cores
            argv = ctl.worker_argv(
                sys.executable,
                model,
                self.a.device,
                self.tiny,
                w.sock_path,
                tag,
                cpus=cpus,
                rate=pair.rate if role == "hp" else 0.0,
                warmup_s=self.a.warmup_s,
                release_mem=role == "lp" and self.a.device == "cuda",
                seed=self.a.seed,
            )
            env = base_env()
            env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.nomps)
            env["CUDA_MPS_LOG_DIRECTORY"] = str(self.nomps)
            if g.mps:
                env.update(self.mps_env())
                if role == "lp" and g.lp_mps_prio and prio == "low":
                    env["CUDA_MPS_CLIENT_PRIORITY"] = "1"
                if role == "lp" and g.smcap is not None:
                    env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(g.smcap)
            if g.fikit:
                self.stats_dir.mkdir(parents=True, exist_ok=True)
                env["FIKIT_STATS"] = str(self.stats_dir / f"{safe(pair.spec)}.{tag}.%p.json")
                if g.via == "daemon" and self.daemon is not None:
                    env.update(
                        {
                            k: v
                            for k, v in self.daemon.env().items()
                            if k in ("FIKIT_CONFIG", "FIKIT_SOCKET", "FIKIT_LIBRARY", "PYTHONPATH")
                        }
                    )
                    argv = [*self.fikitctl(), "run", "--prio", prio, "--name", f"bench-{model}", "--", *argv]
                elif self.lib is not None:
                    env["LD_PRELOAD"] = self.lib
                    env["FIKIT_PRIO"] = prio
                    env["FIKIT_PROG"] = f"bench-{model}"
                    env["FIKIT_SOCKET"] = str(self.base / "no-daemon.sock")
                    if g.domain is not None:
                        env["FIKIT_DOMAIN"] = str(g.domain)
            if g.fikit and role == "hp":
                env.update(self.fikit_hp_env)
            w.spawn(argv, env, cwd=str(benchlib.REPO_ROOT))
            if role == "hp":
                g.hp = w
            else:
                g.lps.append(w)

    def check_group(self, g: Group) -> None:
        """After 'built': does each worker run the way its group promises?"""
        if g.error:
            return
        for w in g.workers():
            if w.error:
                g.error = f"{w.tag}: {w.error}"[:3000]
                return
            b = w.built or {}
            want = g.preload and self.lib is not None
            if bool(b.get("preloaded")) != want and not (self.a.dry_run and self.lib is None):
                g.error = (
                    f"{w.tag}: libfikit.so {'not ' if want else ''}mapped in the worker "
                    f"(expected {'preloaded' if want else 'plain'}); env {b.get('env')}"
                )
                return

    # ------------------------------------------------------------------------------------- one pair
    def run_pair(self, pair: Pair, todo: list[tuple[int, str]], pair_idx: int) -> None:
        a = self.a
        groups: dict[str, Group] = {}
        for _, mode in todo:
            hg, lg = mode_groups(mode, self.via, self.smcaps[0], self.coruns[0])
            groups.setdefault(hg, make_group(hg, self.coruns[0])).need_hp = True
            groups.setdefault(lg, make_group(lg, self.coruns[0])).need_lp = True
        t_start = time.monotonic()
        print(f"\n[pair] {pair.spec}: groups {', '.join(groups)}; {len(todo)} (rep, mode) to do", flush=True)
        for g in groups.values():
            self.spawn_group(pair, g, pair_idx)
        workers = [w for g in groups.values() for w in g.workers()]
        try:
            ctl.connect_and_build(workers, timeout=a.startup_timeout)
            ctl.warm_up(workers, a.warmup_s, timeout=a.startup_timeout)
            for g in groups.values():
                for w in g.workers():
                    if w.error is None and w.ready is None:
                        w.error = "not ready after warm-up"
                self.check_group(g)
            startup = time.monotonic() - t_start
            self.record_startup(startup, len(workers), sum(1 for w in workers if w.role == "lp"))
            print(
                f"[pair] {pair.spec}: workers ready in {startup:.1f}s; "
                + "; ".join(
                    f"{g.name}: {'ok' if not g.error else 'ERROR ' + g.error[:300]}" for g in groups.values()
                ),
                flush=True,
            )
            mps_check = self.check_mps_membership(groups)
            self.run_windows(pair, groups, todo)
        finally:
            ctl.stop_all(workers)
            meta = self.pair_meta(pair, groups, time.monotonic() - t_start)
            meta["mps_membership"] = locals().get("mps_check")
            benchlib.append_jsonl(self.meta, meta)

    def check_mps_membership(self, groups: dict[str, Group]) -> dict[str, Any] | None:
        if not self.mps_up:
            return None
        pipe, log = self.mps_dirs()
        clients = mps_clients(pipe, log)
        if clients is None:
            return None
        out: dict[str, Any] = {"clients": clients, "wrong": []}
        for g in groups.values():
            for w in g.workers():
                pid = (w.built or {}).get("pid")
                if pid is None:
                    continue
                if (pid in clients) != g.mps:
                    out["wrong"].append({"tag": w.tag, "pid": pid, "expected_mps": g.mps})
        if out["wrong"]:
            print(f"[pair] WARNING: MPS membership differs from the plan: {out['wrong']}", flush=True)
        return out

    def run_windows(self, pair: Pair, groups: dict[str, Group], todo: list[tuple[int, str]]) -> None:
        a = self.a
        by_rep: dict[int, list[str]] = {}
        for rep, mode in todo:
            by_rep.setdefault(rep, []).append(mode)
        for rep in sorted(by_rep):
            modes = by_rep[rep]
            rest = [m for m in modes if m != "solo"]
            k = rep % len(rest) if rest else 0
            order = (["solo"] if "solo" in modes else []) + rest[k:] + rest[:k]
            for pos, mode in enumerate(order):
                need = windows_of(mode) * self.window_cost() + a.shutdown_margin_s
                if self.left() < need:
                    self.stop_reason = f"budget: {self.elapsed():.0f}s used of {a.budget_s:.0f}s"
                    return
                row = self.run_mode(pair, groups, mode, rep, pos)
                benchlib.append_jsonl(self.raw, row)
                self.print_row(row)

    def run_mode(self, pair: Pair, groups: dict[str, Group], mode: str, rep: int, pos: int) -> dict[str, Any]:
        a = self.a
        hg_name, lg_name = mode_groups(mode, self.via, self.smcaps[0], self.coruns[0])
        hg, lg = groups[hg_name], groups[lg_name]
        row: dict[str, Any] = {
            "pair": pair.spec,
            "hp": pair.hp,
            "hp_rate": pair.rate,
            "lps": pair.lp_models,
            "lp_prios": [p for _, p in pair.lps],
            "mode": mode,
            "rep": rep,
            "position": pos,
            "ts": benchlib.now_iso(),
            "window_s": a.window_s,
            "discard_s": a.discard_s,
            "device": a.device,
            "dry_run": a.dry_run,
            "via": hg.via if hg.fikit else "none",
            "mps": hg.mps and self.mps_up,
            "smcap_pct": lg.smcap,
            "corun_sm_pct": (lg.corun if lg.force_domain else self.daemon_share) if lg.fikit else None,
            "budget_us": a.budget_us if lg.fikit else None,
            "cores": {"hp": self.hp_cores, "lp": self.lp_cores},
            "ok": False,
            "error": None,
            "hp_stats": None,
            "lp_stats": None,
            "fill": None,
        }
        if a.dry_run and (hg.mps or lg.mps):
            row["note"] = "dry-run: MPS skipped, processes ran without MPS"
        err = hg.error or lg.error
        if err:
            row["error"] = err
            return row
        try:
            if mode.startswith("fikit") and self.via == "daemon" and self.daemon is not None:
                ok, msg = self.daemon.set_mode("strict" if mode == "fikit_strict" else "fikit")
                if not ok:
                    row["error"] = msg
                    return row
            dur = a.discard_s + a.window_s
            assert hg.hp is not None
            if mode in SOLO_MODES:
                with self.clocks.window() as row["gpu_clock"], self.cpu_window() as row["cpu"]:
                    start, recs = ctl.run_window([hg.hp], f"{mode}-{rep}-hp", dur, grace_s=a.window_grace_s)
                row["hp_stats"] = ctl.hp_stats(recs[hg.hp.tag], [(start + a.discard_s, start + dur)])
                with self.clocks.window() as row["gpu_clock_lp"]:
                    start, recs = ctl.run_window(lg.lps, f"{mode}-{rep}-lp", dur, grace_s=a.window_grace_s)
                row["lp_stats"] = [
                    self.lp_row(w, recs[w.tag], [(start + a.discard_s, start + dur)]) for w in lg.lps
                ]
            else:
                probe = None
                before = None
                if hg.fikit and hg.domain is not None and self.lib is not None:
                    probe = benchlib.FillProbe(hg.domain, self.lib)
                    before = probe.read(int((hg.hp.built or {}).get("pid", -1)))
                with self.clocks.window() as row["gpu_clock"], self.cpu_window() as row["cpu"]:
                    start, recs = ctl.run_window([hg.hp, *lg.lps], f"{mode}-{rep}", dur,
                                                 grace_s=a.window_grace_s)
                row["hp_stats"] = ctl.hp_stats(recs[hg.hp.tag], [(start + a.discard_s, start + dur)])
                row["lp_stats"] = [
                    self.lp_row(w, recs[w.tag], [(start + a.discard_s, start + dur)]) for w in lg.lps
                ]
                if probe is not None:
                    after = probe.read(int((hg.hp.built or {}).get("pid", -1)))
                    row["fill"] = benchlib.fill_between(before, after)
                    if row["fill"] is None and probe.error:
                        row["fill_error"] = probe.error[:300]
            row["ok"] = bool(
                row["hp_stats"]
                and row["hp_stats"]["n"] > 0
                and row["lp_stats"]
                and all(s["its"] for s in row["lp_stats"])
            )
            if not row["ok"]:
                row["error"] = "empty window (no HP request or no LP progress measured)"
        except ctl.WorkerError as e:
            row["error"] = str(e)[:3000]
            # a worker that died or hangs in its window (e.g. held for good) makes its group unusable:
            # the remaining rows of that group are recorded as errors at once instead of timing out
            for g in (hg, lg):
                g.error = f"window {mode} rep {rep} failed: {e}"[:3000]
        self.windows_done += 1
        return row

    def cpu_window(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """How busy the HP's cores were during a window, and how much the hypervisor stole."""
        cores = benchlib.parse_cpus(self.hp_cores) if self.hp_cores else list(range(os.cpu_count() or 1))
        return benchlib.cpu_window(cores)

    @staticmethod
    def lp_row(w: ctl.WorkerProc, recs: list[list[float]], spans: ctl.Spans) -> dict[str, Any]:
        batch = int((w.built or {}).get("batch") or 1)
        st = ctl.lp_stats(recs, spans, batch)
        st["model"] = w.model
        return st

    def print_row(self, row: dict[str, Any]) -> None:
        hs = row.get("hp_stats") or {}
        lps = row.get("lp_stats") or []
        lp_txt = ",".join(f"{s.get('its')}" for s in lps)
        status = "ok" if row["ok"] else f"ERROR {str(row.get('error'))[:200]}"
        fill = (row.get("fill") or {}).get("fill")
        print(
            f"  [{self.elapsed():6.0f}s] rep{row['rep']} {row['mode']:16} hp p50 {hs.get('p50_ms')} ms "
            f"p99 {hs.get('p99_ms')} ms n={hs.get('n')} | lp it/s {lp_txt}"
            f"{'' if fill is None else f' | fill {fill:.2f}'} | {status}",
            flush=True,
        )

    def pair_meta(self, pair: Pair, groups: dict[str, Group], wall: float) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "pair": pair.spec,
            "ts": benchlib.now_iso(),
            "wall_s": round(wall, 1),
            "via": self.via,
            "via_note": self.via_note,
            "lib": self.lib,
            "cores": {"hp": self.hp_cores, "lp": self.lp_cores},
            "groups": {},
        }
        for g in groups.values():
            gm: dict[str, Any] = {
                "error": g.error,
                "mps": g.mps,
                "preload": g.preload,
                "smcap": g.smcap,
                "via": g.via,
                "domain": str(g.domain) if g.domain else None,
                "workers": [],
            }
            for w in g.workers():
                b = w.built or {}
                gm["workers"].append(
                    {
                        "tag": w.tag,
                        "pid": b.get("pid"),
                        "import_s": b.get("import_s"),
                        "build_s": b.get("build_s"),
                        "warmup_s": (w.ready or {}).get("warmup_s"),
                        "max_mem_bytes": (w.ready or {}).get("max_mem_bytes"),
                        "preloaded": b.get("preloaded"),
                        "pinned": b.get("pinned"),
                        "env": b.get("env"),
                        "gpu": b.get("gpu"),
                        "info": b.get("info"),
                        "error": w.error,
                        "iters_total": (w.bye or {}).get("iters_total"),
                        "fikit_stats": read_stats(self.stats_dir, pair.spec, w.tag),
                    }
                )
            meta["groups"][g.name] = gm
        if self.daemon is not None and any(g.error for g in groups.values()):
            meta["fikitd_log_tail"] = self.daemon.log_tail()
        return meta

    # ------------------------------------------------------------------------------------- main
    def plan(self, pairs: list[Pair], modes: list[str]) -> list[tuple[Pair, list[tuple[int, str]]]]:
        done = set()
        for r in benchlib.read_jsonl(self.raw):
            if r.get("ok") or not self.a.retry_errors:
                done.add((r.get("pair"), r.get("mode"), r.get("rep")))
        plan = []
        for p in pairs:
            todo = [(rep, m) for rep in range(self.a.reps) for m in modes if (p.spec, m, rep) not in done]
            plan.append((p, todo))
        return plan

    def estimate(self, pair: Pair, todo: list[tuple[int, str]]) -> float:
        if not todo:
            return 0.0
        wins = sum(windows_of(m) for _, m in todo)
        modes = sorted({m for _, m in todo})
        return self.startup_estimate(pair, modes) + wins * self.window_cost() + self.a.shutdown_margin_s

    def run(self, pairs: list[Pair], modes: list[str]) -> int:
        plan = self.plan(pairs, modes)
        total = 0.0
        print(
            f"run_pairs: out={self.out} device={self.a.device} lib={self.lib} budget={self.a.budget_s:.0f}s "
            f"window={self.a.window_s}s+{self.a.discard_s}s discard, reps={self.a.reps}, "
            f"hp cores [{self.hp_cores}] lp cores [{self.lp_cores}]"
        )
        print(f"modes: {','.join(modes)}")
        print(f"{'pair':58} {'to do':>6} {'windows':>8} {'start s':>8} {'est s':>7}")
        for p, todo in plan:
            est = self.estimate(p, todo)
            total += est
            start = self.startup_estimate(p, sorted({m for _, m in todo})) if todo else 0.0
            print(
                f"{p.spec:58} {len(todo):>6} {sum(windows_of(m) for _, m in todo):>8} "
                f"{start:>8.0f} {est:>7.0f}"
            )
        print(
            f"{'total':58} {'':>6} {'':>8} {'':>8} {total:>7.0f}   budget {self.a.budget_s:.0f}s", flush=True
        )
        if self.a.plan_only:
            return 0
        if all(not todo for _, todo in plan):
            print("nothing to do: every (pair, mode, rep) is in raw.jsonl")
            return 0
        env = benchlib.env_info(self.a.device)
        env_file = self.out / "env.jsonl"
        env.update({"via_requested": self.a.via, "argv": sys.argv})
        try:
            self.setup_control_plane(modes)
            env["via"] = self.via
            env["via_note"] = self.via_note
            benchlib.append_jsonl(env_file, env)
            for i, (p, todo) in enumerate(plan):
                if not todo:
                    continue
                one_rep = [t for t in todo if t[0] == todo[0][0]]
                need = (
                    self.startup_estimate(p, sorted({m for _, m in todo}))
                    + sum(windows_of(m) for _, m in one_rep) * self.window_cost()
                    + self.a.shutdown_margin_s
                )
                if self.left() < need:
                    print(
                        f"[budget] {self.left():.0f}s left < {need:.0f}s for one repetition of {p.spec}: "
                        "stopping here; run again to resume",
                        flush=True,
                    )
                    self.stop_reason = "budget"
                    break
                try:
                    self.run_pair(p, todo, i)
                except Exception as e:  # a broken pair is recorded; the next one still runs
                    print(f"[pair] {p.spec}: FAILED {e!r}", flush=True)
                    benchlib.append_jsonl(
                        self.meta, {"pair": p.spec, "ts": benchlib.now_iso(), "error": repr(e)}
                    )
                if self.stop_reason:
                    print(f"[budget] {self.stop_reason}: stopping; run again to resume", flush=True)
                    break
        finally:
            self.teardown()
        print(
            f"\nrun_pairs: {self.windows_done} (pair, mode, rep) rows written in {self.elapsed():.0f}s; "
            f"raw: {self.raw}"
        )
        return 0


def safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


def read_stats(stats_dir: Path, pair_spec: str, tag: str) -> list[dict[str, Any]] | None:
    """The FIKIT_STATS summaries a worker's process wrote at exit (kernel lists dropped)."""
    files = sorted(stats_dir.glob(f"{safe(pair_spec)}.{tag}.*.json")) if stats_dir.exists() else []
    if not files:
        return None
    out = []
    for f in files:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        d["n_kernels"] = len(d.pop("kernels", []) or [])
        d["n_graphs"] = len(d.pop("graphs", []) or [])
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", required=True, help="result directory; raw.jsonl there is appended to and resumed"
    )
    p.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="comma list of HP:LP pair specs")
    p.add_argument(
        "--modes",
        default=",".join(DEFAULT_MODES),
        help="comma list of " + ",".join(ALL_MODES + OPTIONAL_MODES) + " (mps_prio_smcapNN, fikit_corunNN)",
    )
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--window-s", type=float, default=2.5, help="measured seconds per window")
    p.add_argument("--discard-s", type=float, default=0.5, help="seconds cut from the start of each window")
    p.add_argument("--window-overhead-s", type=float, default=0.6, help="planning: extra seconds per window")
    p.add_argument("--warmup-s", type=float, default=2.0, help="per-worker warm-up before the first window")
    p.add_argument("--budget-s", type=float, default=540.0, help="stop starting new work after this long")
    p.add_argument("--shutdown-margin-s", type=float, default=20.0)
    p.add_argument(
        "--window-grace-s",
        type=float,
        default=20.0,
        help="how long past a window's end a worker may take to report (then its group is dropped)",
    )
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--full-size", action="store_true", help="with --device cpu: do not shrink the models")
    p.add_argument("--dry-run", action="store_true", help="no MPS; fikit modes run even without libfikit.so")
    p.add_argument("--lib", default=None, help="libfikit.so (default: $FIKIT_LIB or a build/ folder)")
    p.add_argument(
        "--via",
        default="auto",
        choices=["auto", "daemon", "domain"],
        help="fikit modes through fikitd + fikitctl run, or a self-granted domain",
    )
    p.add_argument("--fikitd-cmd", default=f"{sys.executable} -m fikitd.main", help="how to start fikitd")
    p.add_argument(
        "--fikitctl-cmd", default="", help="how to run fikitctl (default: on PATH, else python -m cli)"
    )
    p.add_argument(
        "--daemon-config",
        default=None,
        help="a fikit.toml template with {runtime_dir} {state_dir} {log_dir} {mps_pipe} {mps_log} "
        "{mps_mode} {sched_mode} {budget_line}",
    )
    p.add_argument("--budget-us", type=int, default=None, help="fikit HP delay budget (domain/daemon config)")
    p.add_argument(
        "--smcap",
        default="60",
        help="CUDA_MPS_ACTIVE_THREAD_PERCENTAGE sweep: mode mps_prio_smcap becomes mps_prio_smcapNN for each "
        "(comma list, e.g. 40,60)",
    )
    p.add_argument(
        "--corun-sm-pct",
        default="50",
        help="co-running SM share sweep: mode fikit_corun becomes fikit_corunNN for each "
        "(comma list, e.g. 50,70)",
    )
    p.add_argument(
        "--timing-from",
        default=str(benchlib.BENCH_DIR / "results" / "2026-11-25-h100" / "timing.json"),
        help="planning: measured startups to use while --out has no timing.json yet",
    )
    p.add_argument(
        "--daemon-corun-sm-pct",
        default=None,
        help="the corun_sm_pct fikitd gives the fikit modes: \"auto\" or 0-100 (default: fikitd's own, "
        f"{benchlib.fikitd_default_share()!r}); with --daemon-config, say what that file sets",
    )
    p.add_argument(
        "--fikit-hp-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the HP in fikit modes (FIKIT_PROFILE=1: HP timed by CUPTI); repeatable",
    )
    p.add_argument("--hp-cores", default="2-3")
    p.add_argument("--lp-cores", default="4-11")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retry-errors", action="store_true", help="redo (pair, mode, rep) rows that failed")
    p.add_argument(
        "--plan-only", action="store_true", help="print the plan and the time estimate, run nothing"
    )
    args = p.parse_args(argv)
    try:
        pairs = [parse_pair(s.strip()) for s in args.pairs.split(",") if s.strip()]
        modes = expand_modes(
            [m.strip() for m in args.modes.split(",") if m.strip()],
            parse_pcts(args.smcap, "--smcap"),
            parse_pcts(args.corun_sm_pct, "--corun-sm-pct"),
        )
        for m in modes:
            check_mode(m)
    except ValueError as e:
        print(f"run_pairs: {e}", file=sys.stderr)
        return 2
    if "solo" not in modes:
        print("run_pairs: note: without 'solo' no ratio can be computed for these rows", file=sys.stderr)
    runner = Runner(args)
    # `timeout` sends SIGTERM: unwind through the finally blocks (workers, fikitd, MPS stopped)
    signal.signal(signal.SIGTERM, _terminate)
    return runner.run(pairs, modes)


def _terminate(signum: int, frame: Any) -> None:
    # once: `timeout` signals the process and then its whole group, which would cut the cleanup short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
