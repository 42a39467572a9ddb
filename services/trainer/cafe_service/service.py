"""The service as one object: the store, the path guard, the launcher, the runner and the scheduler.

    service = Service(settings)            # opens (or creates) the database
    service.start()                        # runner (reconciles first) and scheduler threads
    job = service.submit(spec)             # a checked spec -> a queued job
    service.stop()

The HTTP layer (cafe_service.app) only translates requests to these calls and answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cafe_service.guard import PathGuard
from cafe_service.runner import JobLauncher, Runner
from cafe_service.schedules import Scheduler, ScheduleRequest, check_cron, next_fire
from cafe_service.settings import ServiceSettings
from cafe_service.specs import SpecBase
from cafe_service.store import CommandFor, Job, JobStore, Schedule


def default_launcher(settings: ServiceSettings) -> JobLauncher:
    from cafe_service.launch import RayLauncher  # imports ray: only when the service starts its threads

    return RayLauncher(settings.ray_address)


class Service:
    """Everything `cafe serve` runs; `clock` (epoch seconds) and `launcher` can be replaced in tests."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        clock: Callable[[], float] = time.time,
        launcher: JobLauncher | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.store = JobStore(settings.db_path)
        self.guard = PathGuard(settings.roots)
        self._launcher = launcher
        self.runner: Runner | None = None
        self.scheduler: Scheduler | None = None

    def start(self) -> None:
        launcher = self._launcher or default_launcher(self.settings)
        self.runner = Runner(self.store, self.settings, launcher, self.clock)
        self.scheduler = Scheduler(
            self.store,
            guard=self.guard,
            jobs_dir=self.settings.jobs_dir,
            make_job=self.make_job,
            on_submit=lambda _job_id: self.runner.wake() if self.runner else None,
            clock=self.clock,
            tick_s=self.settings.schedule_tick_s,
        )
        self.runner.start()
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.runner is not None:
            self.runner.stop()
        self.store.close()

    def make_job(self, spec: SpecBase) -> tuple[str, dict[str, Any], CommandFor]:
        """(kind, checked spec, command) of a spec; BadValue/OutsideRoots naming the field."""
        checked = spec.checked(self.guard)

        def command_for(job_dir: Any) -> list[str]:
            return ["cafe", *checked.cafe_args(job_dir)]

        return checked.kind, checked.model_dump(mode="json"), command_for  # type: ignore[attr-defined]

    def submit(self, spec: SpecBase) -> Job:
        kind, checked, command_for = self.make_job(spec)
        job = self.store.add_job(
            kind=kind, spec=checked, command_for=command_for, jobs_dir=self.settings.jobs_dir, now=self.clock()
        )
        if self.runner is not None:
            self.runner.wake()
        return job

    def cancel(self, job_id: int) -> Job:
        if self.runner is None:
            raise RuntimeError("the service has not started")
        return self.runner.cancel(job_id)

    def add_schedule(self, request: ScheduleRequest) -> Schedule:
        cron = check_cron(request.cron)
        _, checked, _ = self.make_job(request.job_spec())
        now = self.clock()
        return self.store.add_schedule(cron=cron, spec=checked, next_fire_at=next_fire(cron, now), now=now)
