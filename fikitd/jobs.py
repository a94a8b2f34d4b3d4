"""Jobs: commands run as the submitting user under fikit, with states kept in the store.

Each job runs under a tiny ``/bin/sh`` wrapper that changes to the job's directory *as the
user* (so root never enters a directory on a user's behalf), runs the command with
libfikit.so preloaded, and writes the exit status to a file.  That file is what lets a
restarted daemon (kill -9 included) learn how a job it did not spawn ended: the job is no
longer its child, so ``waitpid`` cannot tell it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import log
from .store import Store, StoreWriteError

LOG = log.get("jobs")

ACTIVE = ("queued", "running")
# $1 exit-status file, $2 directory, then the command.  The trap keeps the wrapper alive
# through the SIGTERM of a cancel (sent to the whole group) so it can record the status.  A
# cancel that lands before the command starts is remembered ($c) and the command never starts:
# otherwise the TERM would be spent on the wrapper alone and the command would run until the
# SIGKILL of the grace period (seen in CI as a cancel taking 10 s).
WRAPPER = (
    'f=$1; d=$2; shift 2; p=$FIKIT_JOB_PRELOAD; unset FIKIT_JOB_PRELOAD; c=; trap c=143 TERM INT HUP; '
    'if ! cd -- "$d"; then rc=126; elif [ -n "$c" ]; then rc=$c; else LD_PRELOAD="$p" "$@"; rc=$?; fi; '
    'echo "$rc" > "$f"; exit "$rc"'
)


class JobError(Exception):
    """A job that cannot be created; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def proc_start_time(pid: int) -> int | None:
    """The process start time in clock ticks, or None if it is gone or a zombie.

    Recorded at spawn and compared on re-attach so that a recycled pid is never mistaken
    for the job (and never signalled).
    """
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def proc_session(pid: int) -> int | None:
    """The session id of a process (a job's processes share its wrapper's), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[3]) if len(rest) > 3 else None


def session_members(sid: int) -> set[tuple[int, str]]:
    """(pid, command name) of the live processes of a session (a job's wrapper leads its own).

    The name tells a process that exec'd since apart from what it was: a shell's child that
    takes a signal between its fork and its exec may lose it (it still has the shell's trap)."""
    out: set[tuple[int, str]] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.find("(") + 1:raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2:].split()
        if len(rest) > 3 and int(rest[3]) == sid and rest[0] not in ("Z", "X"):
            out.add((int(name), comm))
    return out


# A cancel's SIGTERM can reach the job's group while its wrapper is starting the command: the
# wrapper (which traps TERM to record the status) takes it, and the command, forked a moment
# later or still holding the wrapper's trap between its fork and its exec, never sees it and runs
# on until the SIGKILL of the grace period (seen in CI, about 1 in 12 runs of a cancel right
# after submit).  So once, this long after the SIGTERM, the job's processes born or exec'd since
# are sent it too.
TERM_AGAIN_S = 0.3


@dataclass
class _Running:
    job_id: int
    pid: int
    start: int | None
    popen: subprocess.Popen[bytes] | None  # None when re-attached after a restart
    exit_file: Path
    kill_at: float | None = None
    term_again_at: float | None = None  # see TERM_AGAIN_S
    termed: set[tuple[int, str]] = field(default_factory=set)  # (pid, name) the SIGTERM reached
    cancelled: bool = False
    stopped: str | None = None  # why fikitd stopped it (it then ends failed, not cancelled)
    # MPS servers the job's processes are clients of: server pid -> its start time (pid reuse guard)
    mps_servers: dict[int, int | None] = field(default_factory=dict)
    mps_lost: str | None = None  # what happened to its MPS server, once it died
    mps_lost_at: float | None = None  # time.monotonic() when fikitd noticed
    finish_failed: bool = False  # its end could not be written to the store (disk full); retried


class JobManager:
    def __init__(
        self,
        store: Store,
        jobs_dir: Path,
        env_hook: Callable[[int, int], dict[str, str]],
        preload: Callable[[], Path | None],
        grace_s: float = 10.0,
    ) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.env_hook = env_hook
        self.preload = preload
        self.grace_s = grace_s
        self.running: dict[int, _Running] = {}
        jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o755)

    # --- submit ---------------------------------------------------------------------------------

    def submit(self, *, uid: int, gid: int, argv: list[str], cwd: str | None, env: dict[str, str] | None,
               prio: int, gpu: int, name: str | None) -> dict[str, Any]:
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            raise JobError("not_permitted", f"uid {uid} has no passwd entry") from None
        if os.geteuid() != 0 and uid != os.geteuid():
            raise JobError("not_permitted", "this fikitd is not root: it cannot run jobs for other users")
        now = time.time()
        with self.store.transaction("cannot record the job"):  # a record with its log_dir, or none
            job_id = self.store.add_job(
                name=name or os.path.basename(argv[0])[:128], user=pw.pw_name, uid=uid, gid=pw.pw_gid,
                argv=argv, cwd=cwd or pw.pw_dir or "/", prio=prio, gpu=gpu, state="queued", submitted_at=now,
                log_dir="", reason=None,
            )
            self.store.update_job(job_id, log_dir=str(self.jobs_dir / str(job_id)))
        self._start(job_id, pw, env)
        job = self.store.job(job_id)
        assert job is not None
        return job

    def _start(self, job_id: int, pw: pwd.struct_passwd, user_env: dict[str, str] | None) -> None:
        job = self.store.job(job_id)
        assert job is not None
        log_dir = Path(job["log_dir"])
        try:
            log_dir.mkdir(mode=0o750)
            os.chown(log_dir, 0 if os.geteuid() == 0 else -1, pw.pw_gid if os.geteuid() == 0 else -1)
            files = {n: log_dir / n for n in ("stdout", "stderr", "exit")}
            fds = {n: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
                   for n, p in files.items()}
            if os.geteuid() == 0:
                os.fchown(fds["exit"], pw.pw_uid, pw.pw_gid)  # the wrapper writes it as the user
                for n in ("stdout", "stderr"):
                    os.fchown(fds[n], 0, pw.pw_gid)
            os.close(fds["exit"])
            env = self._environment(job, pw, user_env)
            reason = None if self.preload() else "libfikit.so not found: ran without fikit"
            as_user: dict[str, Any] = {}
            if pw.pw_uid != os.geteuid():
                as_user = {"user": pw.pw_uid, "group": pw.pw_gid,
                           "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid)}
            try:
                popen = subprocess.Popen(
                    ["/bin/sh", "-c", WRAPPER, "fikit-job", str(files["exit"]), job["cwd"], *job["argv"]],
                    stdin=subprocess.DEVNULL, stdout=fds["stdout"], stderr=fds["stderr"], env=env,
                    cwd="/", start_new_session=True, close_fds=True, restore_signals=True, **as_user,
                )
            finally:
                os.close(fds["stdout"])
                os.close(fds["stderr"])
        except OSError as exc:
            LOG.warning("job %d: cannot start: %s", job_id, exc)
            self.store.update_job(job_id, state="failed", ended_at=time.time(), reason=f"cannot start: {exc}")
            return
        start = proc_start_time(popen.pid)
        try:
            self.store.update_job(job_id, state="running", pid=popen.pid, pid_start=start,
                                  started_at=time.time(), reason=reason)
        except StoreWriteError:
            # a job fikitd cannot keep a record of must not run: it has only just started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(5)
            raise
        self.running[job_id] = _Running(job_id, popen.pid, start, popen, files["exit"])
        LOG.info("job %d started: pid %d, user %s, %s", job_id, popen.pid, pw.pw_name, job["argv"][0])

    def _environment(self, job: dict[str, Any], pw: pwd.struct_passwd,
                     user_env: dict[str, str] | None) -> dict[str, str]:
        env = dict(user_env) if user_env is not None else {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        env.setdefault("HOME", pw.pw_dir)
        env.setdefault("USER", pw.pw_name)
        env.setdefault("LOGNAME", pw.pw_name)
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update(self.env_hook(job["prio"], job["gpu"]))
        env["FIKIT_PRIO"] = str(job["prio"])
        env["FIKIT_JOB"] = str(job["id"])
        lib = self.preload()
        theirs = env.pop("LD_PRELOAD", "")
        if lib is not None:
            env["FIKIT_JOB_PRELOAD"] = f"{lib}:{theirs}" if theirs else str(lib)
        else:
            env["FIKIT_JOB_PRELOAD"] = theirs
        return env

    # --- watching -------------------------------------------------------------------------------

    def poll(self) -> list[int]:
        """Notice ended jobs without blocking; return the ids that ended."""
        ended: list[int] = []
        now = time.monotonic()
        for run in list(self.running.values()):
            if run.term_again_at is not None and now >= run.term_again_at:
                run.term_again_at = None
                self._terminate_latecomers(run)
            if run.kill_at is not None and now >= run.kill_at:
                self._signal(run, signal.SIGKILL)
                run.kill_at = None
            rc: int | None
            if run.popen is not None:
                rc = run.popen.poll()
                if rc is None:
                    continue
                if rc < 0:
                    rc = 128 - rc
            else:
                if proc_start_time(run.pid) == run.start and run.start is not None:
                    continue
                rc = self._read_exit(run.exit_file)
            try:
                self._finish(run, rc)
            except StoreWriteError as exc:
                # kept in `running`: the next poll records it once the store can be written again
                if not run.finish_failed:
                    LOG.error("job %d ended (exit %s); its end cannot be recorded yet: %s", run.job_id, rc,
                              exc)
                run.finish_failed = True
                continue
            ended.append(run.job_id)
        return ended

    def _read_exit(self, path: Path) -> int | None:
        try:
            text = path.read_text(errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and len(text) < 6 else None

    def _finish(self, run: _Running, rc: int | None) -> None:
        reason = None
        if run.cancelled:
            state = "cancelled"
        elif rc is None:
            state, reason = "lost", "ended while fikitd was down; its exit status was not recorded"
        else:
            state = "done" if rc == 0 and run.stopped is None else "failed"
            if rc == 126 and run.popen is not None:
                reason = "could not enter the working directory or run the command"
            elif rc == 127:
                reason = "command not found"
            elif rc > 128:
                reason = f"killed by signal {rc - 128}"
        if state == "failed" and run.mps_lost is None:
            # it may have failed on its own before fikitd's next look at its MPS server
            dead = sorted(s for s, start in run.mps_servers.items() if proc_start_time(s) != start)
            if dead:
                run.mps_lost = f"its MPS server (pid {dead[0]}) died while it ran; CUDA calls through it fail"
        notes = [n for n in (run.mps_lost if state != "cancelled" else None, run.stopped, reason) if n]
        fields: dict[str, Any] = {"state": state, "exit_code": rc, "ended_at": time.time()}
        if notes:
            fields["reason"] = "; ".join(notes)
        self.store.update_job(run.job_id, **fields)
        del self.running[run.job_id]
        LOG.info("job %d %s (exit %s)%s", run.job_id, state, rc, f": {fields['reason']}" if notes else "")

    def recover(self) -> None:
        """After a restart: re-attach jobs still alive, settle the rest with a reason."""
        for job in self.store.jobs(states=ACTIVE, limit=1_000_000):
            exit_file = Path(job["log_dir"]) / "exit"
            if job["state"] == "queued":
                self.store.update_job(job["id"], state="lost", ended_at=time.time(),
                                      reason="fikitd stopped before the job started")
                continue
            pid, start = job["pid"], job["pid_start"]
            if pid and start is not None and proc_start_time(pid) == start:
                self.running[job["id"]] = _Running(job["id"], pid, start, None, exit_file)
                LOG.info("job %d re-attached (pid %d)", job["id"], pid)
                continue
            rc = self._read_exit(exit_file)
            if rc is None:
                self.store.update_job(job["id"], state="lost", ended_at=time.time(),
                                      reason="process gone after a fikitd restart; exit status not recorded")
            else:
                self.store.update_job(job["id"], state="done" if rc == 0 else "failed", exit_code=rc,
                                      ended_at=time.time(), reason="ended while fikitd was down")
        self.poll()

    # --- cancel ---------------------------------------------------------------------------------

    def cancel(self, job_id: int) -> None:
        job = self.store.job(job_id)
        if job is None:
            raise JobError("not_found", f"no job {job_id}")
        run = self.running.get(job_id)
        if run is None:
            if job["state"] == "queued":
                self.store.update_job(job_id, state="cancelled", ended_at=time.time())
            return
        if run.cancelled:
            return
        run.cancelled = True
        self.store.update_job(job_id, reason="cancel requested")
        self._terminate(run)

    def stop(self, job_id: int, why: str) -> None:
        """End a job that cannot go on (its MPS server died): SIGTERM, SIGKILL after the grace
        period, as a cancel does, but it ends ``failed`` with ``why`` in its reason."""
        run = self.running.get(job_id)
        if run is None or run.cancelled or run.stopped is not None:
            return
        run.stopped = why
        LOG.warning("job %d: stopping it: %s", job_id, why)
        self._terminate(run)

    def _terminate(self, run: _Running) -> None:
        """SIGTERM to the job's group; again to its late-born processes; SIGKILL after the grace."""
        run.termed = session_members(run.pid)
        self._signal(run, signal.SIGTERM)
        now = time.monotonic()
        run.term_again_at = now + TERM_AGAIN_S
        run.kill_at = now + self.grace_s

    def _terminate_latecomers(self, run: _Running) -> None:
        if run.popen is None and proc_start_time(run.pid) != run.start:
            return  # not ours any more
        for pid, _name in session_members(run.pid) - run.termed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    def _signal(self, run: _Running, sig: int) -> None:
        if run.popen is None and proc_start_time(run.pid) != run.start:
            return  # not ours any more: never signal a recycled pid
        try:
            os.killpg(run.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            LOG.warning("job %d: cannot signal process group %d: %s", run.job_id, run.pid, exc)
