"""A running job's true state, from what the machine shows: its exit record, else its process.

    verdict = judge(job, launcher)        # Ended(exit record) | StillRunning() | Lost()
    results = reconcile(store, launcher, now=time.time(), grace_s=10)   # at start-up

The same judgement serves the runner while the service runs and, at start-up, every job a previous
service left `running`:
- JOBDIR/exit.json present: the command ended; succeeded (exit code 0) or failed (its code), or
  cancelled when a cancel had been asked for.
- the process (pid and start time, from the store or else JOBDIR/process.json) still alive: still
  running, monitored again.
- otherwise: failed, `lost: the process ended without an exit record (service or node restart)`
  (cancelled, when a cancel had been asked for: it was killed).
Queued jobs stay queued and start as slots free up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cafe_service import process
from cafe_service.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job, JobStore

LOST_REASON = "lost: the process ended without an exit record (service or node restart)"


class Launcher(Protocol):
    def alive(self, record: dict[str, Any]) -> bool: ...

    def signal(self, record: dict[str, Any], signum: int) -> bool: ...


@dataclass(frozen=True)
class Ended:
    exit: dict[str, Any]


@dataclass(frozen=True)
class StillRunning:
    record: dict[str, Any]


@dataclass(frozen=True)
class Lost:
    pass


Verdict = Ended | StillRunning | Lost


def process_record(job: Job) -> dict[str, Any] | None:
    """pid, host, start_time and node of a job's wrapper: the store's, else the wrapper's own file."""
    if job.pid is not None and job.process_start_time is not None:
        return {"pid": job.pid, "host": job.host, "start_time": job.process_start_time, "node_id": job.node_id}
    return process.read_process(job.job_dir)


def judge(job: Job, launcher: Launcher) -> Verdict:
    exit_record = process.read_exit(job.job_dir)
    if exit_record is not None:
        return Ended(exit_record)
    record = process_record(job)
    if record is not None and launcher.alive(record):
        return StillRunning(record)
    # It may have ended between the two reads: the exit record is written before the wrapper exits.
    exit_record = process.read_exit(job.job_dir)
    return Ended(exit_record) if exit_record is not None else Lost()


def outcome(job: Job, verdict: Ended | Lost, *, killed: bool = False) -> tuple[str, str | None, int | None]:
    """(state, reason, exit code) of a job that has ended."""
    if isinstance(verdict, Lost):
        if job.cancel_requested_at is not None:
            return CANCELLED, "cancelled (killed)", None
        return FAILED, LOST_REASON, None
    code = int(verdict.exit["exit_code"])
    if job.cancel_requested_at is not None:
        how = "killed with SIGKILL after the grace period" if killed else f"it ended with exit code {code}"
        return CANCELLED, f"cancelled ({how})", code
    if code == 0:
        return SUCCEEDED, None, 0
    signal_name = verdict.exit.get("signal")
    ended = f"killed by {signal_name}" if signal_name else f"exit code {code}"
    last = process.last_log_line(job.job_dir)
    return FAILED, f"{ended}: {last}" if last else ended, code


def reconcile(store: JobStore, launcher: Launcher, *, now: float) -> list[tuple[int, str]]:
    """Bring every `running` job to its true state; (job id, state) for each, for the start-up log."""
    results = []
    for job in store.in_state(RUNNING):
        verdict = judge(job, launcher)
        if isinstance(verdict, StillRunning):
            if job.pid is None:  # started just before the last service ended: adopt the wrapper's record
                record = verdict.record
                store.set_process(
                    job.id,
                    pid=record["pid"],
                    host=record["host"],
                    node_id=record.get("node_id"),
                    start_time=record["start_time"],
                )
            results.append((job.id, RUNNING))
            continue
        state, reason, code = outcome(job, verdict)
        store.finish(job.id, state, reason, exit_code=code, now=now)
        results.append((job.id, state))
    return results
