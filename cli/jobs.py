"""Batch jobs: ``submit``, ``jobs``, ``show``, ``cancel`` and ``logs``.

The daemon spawns a job as the submitting user with the caller's cwd and environment, so a job
behaves like the same command typed in that shell; fikitctl only describes it and watches it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from . import common

LOG_CHUNK = 64 * 1024
POLL_MIN = 0.1
POLL_MAX = 1.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="queue a batch job under fikit",
        description="Queue SCRIPT, or CMD after --, as a fikit job; prints its id.",
    )
    p.add_argument(
        "--prio",
        type=common.parse_prio,
        default=common.PRIO_NAMES["normal"],
        metavar="P",
        help="high, normal, low or 0..7 (default normal)",
    )
    p.add_argument("--name", metavar="N", help="a name to find the job by")
    p.add_argument("--gpu", type=common.parse_gpu, metavar="I",
                   help="GPU index (default: the one CUDA_VISIBLE_DEVICES names, else the least loaded)")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit with its exit code")
    p.add_argument("--follow", action="store_true", help="stream the job's output until it ends")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="SCRIPT | -- CMD ARGS")
    p.set_defaults(func=run_submit)

    p = sub.add_parser("jobs", help="list jobs", description="List your jobs (queued and running).")
    p.add_argument("--all", action="store_true", help="include finished jobs and other users' jobs")
    p.add_argument(
        "--state",
        choices=["queued", "running", "done", "failed", "cancelled", "lost"],
        help="only jobs in this state",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_jobs)

    p = sub.add_parser("show", help="show one job", description="Show every field of a job.")
    p.add_argument("job", metavar="JOB", help="job id")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=run_show)

    p = sub.add_parser(
        "cancel",
        help="cancel a job",
        description="Cancel a job: SIGTERM, then SIGKILL after the daemon's grace period.",
    )
    p.add_argument("job", metavar="JOB", help="job id")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=run_cancel)

    p = sub.add_parser("logs", help="print a job's output", description="Print a job's output.")
    p.add_argument("job", metavar="JOB", help="job id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=run_logs)


def submit_request(command: list[str], cwd: str, environ: dict[str, str]) -> dict[str, Any]:
    """Turn ``SCRIPT`` or ``-- CMD ARGS`` into the submit op's arguments (pure, for tests)."""
    if command and command[0] == "--":
        argv = command[1:]
        if not argv:
            common.die("submit needs a command after --: fikitctl submit -- CMD ARGS", common.EXIT_USAGE)
        return {"argv": argv, "cwd": cwd, "env": environ}
    if not command:
        common.die("submit needs a SCRIPT or -- CMD ARGS", common.EXIT_USAGE)
    if len(command) > 1:
        common.die(
            f"submit takes one SCRIPT; to pass arguments use: fikitctl submit -- {' '.join(command)}",
            common.EXIT_USAGE,
        )
    script = os.path.join(cwd, command[0])
    if not os.path.isfile(script):
        common.die(f"no such script: {script}")
    return {"script": os.path.abspath(script), "cwd": cwd, "env": environ}


def job_exit_code(job: dict[str, Any]) -> int:
    """The status a shell would have seen: 128+N for a signal, as with a foreground command."""
    code = job.get("exit_code")
    if isinstance(code, int):
        return 128 - code if code < 0 else min(code, 255)
    return common.EXIT_OK if job.get("state") == "done" else common.EXIT_FAILURE


def run_submit(args: argparse.Namespace) -> int:
    request = submit_request(list(args.command), os.getcwd(), dict(os.environ))
    request["prio"] = args.prio
    if args.name:
        request["name"] = args.name
    if args.gpu is not None:
        request["gpu"] = args.gpu
    with common.daemon(args) as conn:
        job = conn.call("submit", **request).get("job")
        job_id = str(job.get("id") if isinstance(job, dict) else job)
        if not (args.wait or args.follow):
            if args.json:
                common.print_json(job if isinstance(job, dict) else {"id": job_id})
            else:
                print(job_id)
            return common.EXIT_OK
        if args.follow:
            print(f"fikitctl: job {job_id} submitted", file=sys.stderr)
        else:
            print(job_id, file=sys.stderr if args.json else sys.stdout)
        sys.stdout.flush()
        try:
            final = follow(conn, job_id) if args.follow else wait(conn, job_id)
        except KeyboardInterrupt:
            print(f"\nfikitctl: job {job_id} keeps running; stop it with: fikitctl cancel {job_id}",
                  file=sys.stderr)
            return 130
        if args.json:
            common.print_json(final)
        return job_exit_code(final)


def wait(conn: common.Daemon, job_id: str) -> dict[str, Any]:
    delay = POLL_MIN
    while True:
        job = conn.call("show", job=job_id)["job"]
        if job.get("state") in common.TERMINAL_STATES:
            return dict(job)
        time.sleep(delay)
        delay = min(POLL_MAX, delay * 1.5)


STREAMS = ("stdout", "stderr")


def _out(stream: str) -> Any:
    return sys.stderr if stream == "stderr" else sys.stdout


def read_logs(conn: common.Daemon, job_id: str, offsets: dict[str, int]) -> tuple[bool, str | None]:
    """Copy whatever is new in both streams to ours; True if anything was; and the job's state."""
    got = False
    state = None
    for stream in STREAMS:
        chunk = conn.call("logs", job=job_id, offset=offsets[stream], max=LOG_CHUNK, stream=stream)
        data = chunk.get("data") or ""
        if data:
            out = _out(stream)
            out.write(data)
            out.flush()
            got = True
        offsets[stream] = int(chunk.get("offset", offsets[stream] + len(data.encode())))
        state = chunk.get("state", state)
    return got, state


def follow(conn: common.Daemon, job_id: str) -> dict[str, Any]:
    """Stream both logs by offset until the job has ended and every byte is out."""
    offsets = dict.fromkeys(STREAMS, 0)
    delay = POLL_MIN
    while True:
        got, state = read_logs(conn, job_id, offsets)
        if got:
            delay = POLL_MIN
            continue
        if state in common.TERMINAL_STATES:
            # the state was read after the data: once ended, one more empty read means all is out
            got, _ = read_logs(conn, job_id, offsets)
            if not got:
                return dict(conn.call("show", job=job_id)["job"])
            continue
        time.sleep(delay)
        delay = min(POLL_MAX, delay * 1.5)


def job_command(job: dict[str, Any]) -> str:
    argv = job.get("argv")
    if isinstance(argv, list) and argv:
        return " ".join(str(a) for a in argv)
    return str(job.get("script") or "-")


def job_row(job: dict[str, Any], now: float) -> list[str]:
    exit_code = job.get("exit_code")
    started = job.get("started_at") or job.get("submitted_at")
    ended = job.get("ended_at")
    if isinstance(started, (int, float)) and started > 0:
        end = ended if isinstance(ended, (int, float)) and ended > 0 else now
        age = common.fmt_duration(end - started)
    else:
        age = "-"
    gpu = job.get("gpu")
    return [
        str(job.get("id", "?")),
        str(job.get("name") or "-"),
        str(job.get("user") or job.get("uid") or "-"),
        common.prio_label(job.get("prio")),
        "-" if gpu is None else str(gpu),
        str(job.get("state", "?")),
        "-" if exit_code is None else str(exit_code),
        age,
        job_command(job),
    ]


def format_jobs(jobs: list[dict[str, Any]], now: float) -> str:
    headers = ["ID", "NAME", "USER", "PRIO", "GPU", "STATE", "EXIT", "TIME", "COMMAND"]
    return common.format_table(headers, [job_row(j, now) for j in jobs])


def run_jobs(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"all": bool(args.all)}
    if args.state:
        request["state"] = args.state
    with common.daemon(args) as conn:
        jobs = list(conn.call("jobs", **request).get("jobs") or [])
    if args.json:
        common.print_json(jobs)
    elif jobs:
        print(format_jobs(jobs, time.time()), end="")
    else:
        print("no jobs" + ("" if args.all else " (fikitctl jobs --all shows finished ones)"))
    return common.EXIT_OK


SHOW_FIELDS = [
    ("id", "job"), ("name", "name"), ("user", "user"), ("uid", "uid"), ("state", "state"),
    ("exit_code", "exit code"), ("reason", "reason"), ("prio", "priority"), ("gpu", "gpu"),
    ("pid", "pid"), ("argv", "command"), ("cwd", "cwd"), ("submitted_at", "submitted"),
    ("started_at", "started"), ("ended_at", "ended"), ("log_dir", "logs"),
]


def format_job(job: dict[str, Any]) -> str:
    lines = []
    for key, label in SHOW_FIELDS:
        value = job.get(key)
        if key == "argv":
            text = job_command(job)
        elif key == "prio":
            text = common.prio_label(value)
        elif key.endswith("_at"):
            text = common.fmt_time(value)
        else:
            text = "-" if value is None or value == "" else str(value)
        lines.append(f"{label + ':':<11} {text}")
    return "\n".join(lines) + "\n"


def _job_from(args: argparse.Namespace, op: str) -> dict[str, Any]:
    with common.daemon(args) as conn:
        return dict(conn.call(op, job=str(args.job))["job"])


def run_show(args: argparse.Namespace) -> int:
    job = _job_from(args, "show")
    if args.json:
        common.print_json(job)
    else:
        print(format_job(job), end="")
    return common.EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    job = _job_from(args, "cancel")
    if args.json:
        common.print_json(job)
    else:
        print(f"job {job.get('id', args.job)}: {job.get('state', '?')}")
    return common.EXIT_OK


def run_logs(args: argparse.Namespace) -> int:
    with common.daemon(args) as conn:
        if args.follow:
            try:
                follow(conn, str(args.job))
            except KeyboardInterrupt:
                return 130
            return common.EXIT_OK
        offsets = dict.fromkeys(STREAMS, 0)
        while read_logs(conn, str(args.job), offsets)[0]:
            pass
    return common.EXIT_OK
