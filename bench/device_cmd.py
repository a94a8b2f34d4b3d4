#!/usr/bin/env python3
"""Print the exact command of one GPU call (bench/NEXT_SESSION.md), with this checkout's commit in it.

The device's copy of the tree has no .git, so each command carries FIKIT_COMMIT as a literal (HEAD,
with "-dirty" when tracked files differ from it). Every command: builds libfikit.so (the machine
starts bare), runs its steps against a deadline taken from bash's $SECONDS (so the results are
packed before the 10-minute limit), and tars the results folder into $OUT/results.tgz.

    python3 bench/device_cmd.py --list          # the calls, what each runs, estimated seconds
    python3 bench/device_cmd.py 1               # call 1's command (paste it as run's command)
    python3 bench/device_cmd.py 1 --date 2026-11-26
    python3 bench/device_cmd.py 4               # issue 8's two-GPU proof: run's kind nvidia-h100-x2
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

import benchlib
import run_pairs

LIMIT = 2000  # the device tool's command length limit
DEADLINE_S = 560  # steps stop starting work here; the tool kills at 600
CORE_MODES = "solo,solo_preload,timeslice,mps,mps_prio,mps_prio_smcap,fikit_strict,fikit,fikit_corun"
CORE = f"--modes {CORE_MODES} --smcap 40,60 --corun-sm-pct 50,70 --reps 5"

# Calls 1 and 2 take run_pairs' first two pairs (issue 11's core); call 3 the rest.
REST = run_pairs.DEFAULT_PAIRS[2:]
# Session 2 measured the first four and the CUDA-graph and GPT-2 pairs; call 5 takes the others.
ISSUE9_DONE = ("gpt2:resnet50_train", "resnet50_graph:resnet50_train")
ISSUE9_REST = [p for p in run_pairs.DEFAULT_PAIRS[4:] if p not in ISSUE9_DONE]
ISSUE9_MODES = "solo,solo_preload,solo_mps,timeslice,mps,mps_prio,fikit_strict,fikit"

# (what, estimated seconds on the H100 without the ~90 s machine start, shell steps)
CALLS: dict[int, tuple[str, int, list[str]]] = {
    1: (
        "issue 5 proof (verify_daemon) + issue 11 core pair 1: bert:vgg16_infer, every mode, SM caps 40/60, "
        "co-running 50/70, 5 interleaved reps",
        40 + 120 + 300,
        [
            "timeout 230 python3 bench/verify_daemon.py --lib $L --out $R/daemon 2>&1 | tee $R/daemon.log"
            " | grep -E 'PASS|FAIL|n/a|verify_daemon'",
            "B=$((DL-SECONDS)); timeout $((B+20)) python3 bench/run_pairs.py --lib $L --out $R"
            f" --pairs bert:vgg16_infer {CORE} --budget-s $B 2>&1 | tee -a $R/run_pairs.log | tail -60",
        ],
    ),
    2: (
        "issue 11 core pair 2: resnet50:resnet50_train, same modes and reps; then issue 4 timelines of "
        "bert:vgg16_infer in fikit_corun50 and fikit (gap filling)",
        40 + 300 + 160,
        [
            "B=$((DL-SECONDS-150)); timeout $((B+20)) python3 bench/run_pairs.py --lib $L --out $R"
            f" --pairs resnet50:resnet50_train {CORE} --budget-s $B 2>&1 | tee -a $R/run_pairs.log"
            " | tail -60",
            "for M in fikit_corun50 fikit; do [ $((DL-SECONDS)) -gt 45 ] && timeout $((DL-SECONDS)) python3"
            " bench/timeline_pair.py --pair bert:vgg16_infer --mode $M --lib $L --out $R/timeline 2>&1"
            " | tail -5; done",
        ],
    ),
    3: (
        "issues 9/11, the other 8 default pairs in value order (vit_b_16:gpt2_train, "
        "resnet50%100:vgg16_infer, gpt2:resnet50_train, bert%60:vgg16_train, CUDA graph, torch.compile, "
        "three levels, four LPs), issue 9's modes + fikit_corun50, 3 reps; resumable: run the same command "
        "again until it says nothing to do (about 2.5 pairs a call; 4 calls in all)",
        40 + 500,
        [
            "B=$((DL-SECONDS)); timeout $((B+20)) python3 bench/run_pairs.py --lib $L --out $R --pairs "
            + ",".join(REST)
            + " --budget-s $B 2>&1 | tee -a $R/run_pairs.log | tail -60",
        ],
    ),
    4: (
        "issue 8 on two GPUs (run's kind nvidia-h200-x2): verify_multigpu, a pair per GPU and a two-GPU "
        "job through fikitd, solo / fikit / fikit_hp / mps_hp side by side, then mps_prio and the LPs alone, "
        "windows of 1.0 s, as many reps as the deadline allows (up to 60), the HP processes started anew "
        "every 8 reps (identical processes differ by a few percent for life)",
        40 + 490,
        [
            "B=$((DL-SECONDS)); timeout $((B+40)) python3 bench/verify_multigpu.py --lib $L --out $R"
            " --budget-s $B --reps 60 --window-s 1.0 --discard-s 0.25 --hp-restart-every 8 2>&1"
            " | tee $R/verify.log"
            " | grep -E 'PASS|FAIL|n/a|GPU [01] |two-GPU|verify_multigpu'",
        ],
    ),
    5: (
        "issue 9's pairs not yet measured after session 2 (Poisson transformer, torch.compile, three "
        "levels, four LPs), issue 9's modes, 3 reps, into the folder session 2 started; resumable",
        40 + 500,
        [
            "B=$((DL-SECONDS)); timeout $((B+25)) python3 bench/run_pairs.py --lib $L --out $R --pairs '"
            + ",".join(ISSUE9_REST)
            + f"' --modes {ISSUE9_MODES} --reps 3 --window-s 1.5 --discard-s 0.3 --budget-s $B 2>&1"
            " | tee -a $R/run_pairs.log | tail -40",
            'grep -h "co-running share" $R/*.log > $R/share_steps.txt',
        ],
    ),
}
# Calls other than the one-GPU H100 ones: their results folder and their own deadline.
SUFFIX = {4: "2xh200", 5: "h100-pairs9"}
DEADLINES = {4: 555}  # the whole call within the 10-minute limit, the results packed before it


def results_dir(n: int, date: str) -> str:
    return f"bench/results/{date}-{SUFFIX.get(n, 'h100')}"


def command(n: int, date: str, commit: str, deadline_s: int | None = None) -> str:
    steps = CALLS[n][2]
    dl = deadline_s if deadline_s is not None else DEADLINES.get(n, DEADLINE_S)
    head = [
        f"export FIKIT_COMMIT={commit} PYTHONUNBUFFERED=1 DL={dl}",
        f"R={results_dir(n, date)}",
        "mkdir -p $R",
        "nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader"
        f" | tee -a $R/gpu-call{n}.txt",
        "(cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release && cmake --build build/gpu -j16)"
        f" > $R/build-call{n}.log 2>&1 || tail -20 $R/build-call{n}.log",
        "L=$PWD/build/gpu/interpose/libfikit.so",
        "test -f $L || echo NO LIBRARY BUILT",
    ]
    tail = ["tar czf $OUT/results.tgz $R", "ls -la $OUT", f"echo call {n} done in ${{SECONDS}}s"]
    return "; ".join(head + steps + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("call", nargs="?", type=int, choices=sorted(CALLS))
    p.add_argument("--date", default=dt.date.today().isoformat(), help="names bench/results/<date>-h100")
    p.add_argument("--commit", default=None, help="default: HEAD of this checkout (-dirty if modified)")
    p.add_argument(
        "--deadline",
        type=int,
        default=None,
        help=f"seconds after which steps start no new work (default {DEADLINE_S}, call 4: {DEADLINES[4]}; "
        "less device time left: pass less)",
    )
    p.add_argument("--list", action="store_true")
    a = p.parse_args(argv)
    commit = a.commit or benchlib.git_commit() or "unknown"
    if a.list or a.call is None:
        total = 0
        for n, (what, est, _) in CALLS.items():
            total += est + 90
            print(f"call {n}: ~{est}s + ~90s machine start (cumulative ~{total / 60:.1f} min): {what}")
        print("call 3 is repeatable: each run resumes where raw.jsonl stops; call 4 needs two GPUs")
        return 0
    cmd = command(a.call, a.date, commit, a.deadline)
    if len(cmd) > LIMIT:
        print(f"device_cmd: call {a.call}'s command is {len(cmd)} characters (> {LIMIT})", file=sys.stderr)
        return 1
    if commit.endswith("-dirty"):
        print(f"device_cmd: note: {commit}: tracked files differ from HEAD; commit first", file=sys.stderr)
    print(cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
