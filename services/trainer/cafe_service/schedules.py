"""Schedules: recurring dataset jobs by cron expression, fired by a scheduler thread.

    POST /schedules {"cron": "0 * * * *", "input": "incoming/photos", "output": "triples/live", "preset": "tiny"}

Each firing submits a build-data job with mode `incremental` (only inputs not yet in the set are
processed), so a schedule keeps one shard set up to date with its input. Cron expressions are read by
croniter, in UTC. A schedule never runs twice at once: a firing that comes due while its previous job
is queued or running is skipped, and recorded as skipped with the reason. Missed firings (the service
was down) are not replayed one by one: the next tick fires once and the schedule moves to its next
time after now. The clock is injectable, so tests need not wait for a minute to pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field

from cafe_service.errors import BadValue, ServiceError
from cafe_service.guard import PathGuard
from cafe_service.specs import BuildDataSpec, Name, Overrides, PathText
from cafe_service.store import REFUSED, CommandFor, JobStore, Schedule, ScheduleRun

log = logging.getLogger("cafe_service")


class ScheduleRequest(BaseModel):
    """What `POST /schedules` takes: a cron expression and the build-data job it fires."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: Annotated[str, Field(min_length=1, max_length=200)]
    input: PathText
    output: PathText
    preset: Name
    overrides: Overrides = Field(default_factory=dict)

    def job_spec(self) -> BuildDataSpec:
        return BuildDataSpec(
            kind="build-data",
            input=self.input,
            output=self.output,
            preset=self.preset,
            mode="incremental",
            overrides=self.overrides,
        )


def check_cron(expression: str) -> str:
    """The expression, if croniter reads it (5 fields: minute hour day month weekday); BadValue naming `cron`."""
    expression = " ".join(expression.split())
    if not croniter.is_valid(expression):
        raise BadValue(
            f"cron: {expression!r} is not a cron expression; use 5 fields, minute hour day month weekday, "
            "e.g. '0 * * * *' (hourly) or '*/15 * * * *'",
            "cron",
        )
    return expression


def next_fire(expression: str, after: float) -> float:
    """The first time strictly after `after` (epoch seconds) that the expression names, in UTC."""
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(expression, start).get_next(float))


class Scheduler:
    """Fires due schedules every `tick_s`; `make_job(spec) -> (kind, spec dict, command_for)` checks a spec."""

    def __init__(
        self,
        store: JobStore,
        *,
        guard: PathGuard,
        jobs_dir: Path,
        make_job: Callable[[BuildDataSpec], tuple[str, dict[str, Any], CommandFor]],
        on_submit: Callable[[int], None],
        clock: Callable[[], float],
        tick_s: float,
    ) -> None:
        self.store = store
        self.guard = guard
        self.jobs_dir = jobs_dir
        self.make_job = make_job
        self.on_submit = on_submit
        self.clock = clock
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cafe-service-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying in %.1f s", self.tick_s)

    def tick(self) -> list[ScheduleRun]:
        """Fire every schedule due by the clock's now; what each firing did."""
        now = self.clock()
        runs = []
        for schedule in self.store.due_schedules(now):
            run = self.fire(schedule, now)
            if run is not None:
                runs.append(run)
        return runs

    def fire(self, schedule: Schedule, now: float) -> ScheduleRun | None:
        job, refused = None, None
        try:
            # Checked again at each firing: the roots may differ from the service that stored it.
            job = self.make_job(BuildDataSpec.model_validate(schedule.spec))
        except ServiceError as exc:
            refused = exc.error
        except ValueError as exc:
            refused = f"the stored spec no longer validates: {exc}"
        try:
            run = self.store.fire_schedule(
                schedule,
                now=now,
                next_fire_at=next_fire(schedule.cron, now),
                job=job,
                jobs_dir=self.jobs_dir,
                refused=refused,
            )
        except LookupError:
            return None  # removed meanwhile
        if run.job_id is not None:
            log.info("schedule %s fired: job %s", schedule.id, run.job_id)
            self.on_submit(run.job_id)
        elif run.outcome == REFUSED:
            log.warning("schedule %s refused: %s", schedule.id, run.reason)
        else:
            log.info("schedule %s skipped: %s", schedule.id, run.reason)
        return run
