"""The runner: starts queued jobs as slots free up (FIFO), watches running ones, carries out cancels.

    runner = Runner(store, settings, launcher)
    runner.start()                 # a thread; reconcile() first, then one step every poll_s (or when woken)
    runner.wake()                  # after a submission: start it now if a slot is free
    runner.cancel(job_id)          # queued: cancelled at once; running: SIGTERM, SIGKILL after the grace
    runner.stop()

One thread does all starting and watching, so slots are counted by one hand: at most `slots` jobs are
`running` at any time (jobs a previous service left running count too). A job's process outlives the
service; a restarted service adopts it (see cafe_service.reconcile).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cafe_service.errors import Conflict, NotFound
from cafe_service.reconcile import Ended, Launcher, Lost, StillRunning, judge, outcome, process_record, reconcile
from cafe_service.settings import ServiceSettings
from cafe_service.specs import parse_spec
from cafe_service.store import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL, Job, JobStore

log = logging.getLogger("cafe_service")
SPEC_NAME = "spec.json"
UNAVAILABLE_RETRY_S = 10.0


class LauncherUnavailable(RuntimeError):
    """Raised by a launcher that cannot start anything now (Ray unreachable): the job goes back to the queue."""


class JobLauncher(Launcher, Protocol):
    def start(self, job_dir: Path, cafe_args: list[str]) -> dict[str, Any]: ...


def prepare_job_dir(job: Job) -> Path:
    """JOBDIR with spec.json (the checked spec) and the files the spec's command reads (loop.yaml)."""
    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / SPEC_NAME).write_text(json.dumps(job.spec, indent=2) + "\n")
    for name, text in parse_spec(job.spec).job_files().items():
        (job_dir / name).write_text(text)
    return job_dir


class Runner:
    """Start queued jobs, watch running ones, cancel; one background thread."""

    def __init__(
        self,
        store: JobStore,
        settings: ServiceSettings,
        launcher: JobLauncher,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.settings = settings
        self.launcher = launcher
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._killed: set[int] = set()  # jobs sent SIGKILL by this service
        self._unavailable_until = 0.0  # monotonic time before which starting is not tried again (Ray down)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cafe-service-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            for job_id, state in reconcile(self.store, self.launcher, now=self.clock()):
                log.warning("reconciled job %s left running by the last service: %s", job_id, state)
        except Exception:
            log.exception("reconciling running jobs failed; they are checked again on every step")
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a failing step (a full disk, Ray down) must not end the runner
                log.exception("runner step failed; retrying in %.1f s", self.settings.poll_s)
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    def step(self) -> None:
        """Check every running job once, then start queued jobs into the free slots."""
        for job in self.store.in_state(RUNNING):
            self._check(job)
        free = self.settings.slots - self.store.count(RUNNING)
        if free > 0 and time.monotonic() >= self._unavailable_until:
            for job in self.store.in_state(QUEUED, limit=free):
                if self._stop.is_set() or time.monotonic() < self._unavailable_until:
                    return  # stopping, or the launcher just said it cannot start anything now
                self._start(job)

    def _start(self, job: Job) -> None:
        if not self.store.claim(job.id, self.clock()):
            return  # cancelled meanwhile
        try:
            job_dir = prepare_job_dir(job)
            record = self.launcher.start(job_dir, job.command[1:])
        except LauncherUnavailable as exc:
            self.store.requeue(job.id)
            current = self.store.get(job.id)
            if current is not None and current.cancel_requested_at is not None:
                self.store.finish(
                    job.id,
                    CANCELLED,
                    "cancelled before it started",
                    exit_code=None,
                    now=self.clock(),
                    from_states=(QUEUED,),
                )
            self._unavailable_until = time.monotonic() + UNAVAILABLE_RETRY_S
            log.warning("%s; job %s stays queued, next try in %.0f s", exc, job.id, UNAVAILABLE_RETRY_S)
            return
        except Exception as exc:
            log.exception("job %s did not start", job.id)
            reason = f"could not start on Ray: {type(exc).__name__}: {str(exc)[:400]}"
            self.store.finish(job.id, FAILED, reason, exit_code=None, now=self.clock())
            return
        self.store.set_process(
            job.id,
            pid=record["pid"],
            host=record["host"],
            node_id=record.get("node_id"),
            start_time=record["start_time"],
        )
        started = self.store.get(job.id)
        if started is not None and started.cancel_requested_at is not None:  # cancelled while it was starting
            self.launcher.signal(record, signal.SIGTERM)

    def _check(self, job: Job) -> None:
        verdict = judge(job, self.launcher)
        if isinstance(verdict, StillRunning):
            if job.pid is None:
                record = verdict.record
                self.store.set_process(
                    job.id,
                    pid=record["pid"],
                    host=record["host"],
                    node_id=record.get("node_id"),
                    start_time=record["start_time"],
                )
            self._escalate(job, verdict.record)
            return
        self._end(job, verdict)

    def _escalate(self, job: Job, record: dict[str, Any]) -> None:
        """SIGKILL a cancelled job still alive after the grace period (once; again after a restart)."""
        if job.cancel_requested_at is None or job.id in self._killed:
            return
        if self.clock() - job.cancel_requested_at >= self.settings.cancel_grace_s:
            log.warning("job %s outlived the %.1f s grace after SIGTERM: SIGKILL", job.id, self.settings.cancel_grace_s)
            self.launcher.signal(record, signal.SIGKILL)
            self._killed.add(job.id)

    def _end(self, job: Job, verdict: Ended | Lost) -> None:
        state, reason, code = outcome(job, verdict, killed=job.id in self._killed)
        if self.store.finish(job.id, state, reason, exit_code=code, now=self.clock()):
            log.info("job %s %s%s", job.id, state, f": {reason}" if reason else "")
        self._killed.discard(job.id)
        self._wake.set()  # a slot is free

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job; NotFound / Conflict (already ended) otherwise."""
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job.state in TERMINAL:
            raise Conflict(f"job {job_id} has already ended ({job.state}); nothing to cancel")
        now = self.clock()
        if job.state == QUEUED and self.store.finish(
            job_id, CANCELLED, "cancelled before it started", exit_code=None, now=now, from_states=(QUEUED,)
        ):
            return self.store.get(job_id)  # type: ignore[return-value]
        self.store.request_cancel(job_id, now)
        job = self.store.get(job_id)
        assert job is not None
        record = process_record(job)
        if record is not None:
            self.launcher.signal(record, signal.SIGTERM)
        # else: still starting; the runner signals it as soon as its process is known
        self._wake.set()
        return job
