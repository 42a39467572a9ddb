"""The training service's HTTP API (FastAPI).

    from cafe_service import ServiceSettings, create_app
    app = create_app(ServiceSettings(db_path="svc/service.db", token="...", roots=["/data"]))
    # uvicorn.run(app, host="127.0.0.1", port=8780); or from the command line: `cafe serve`

| route                      | does                                                                   |
|----------------------------|------------------------------------------------------------------------|
| `GET /health`              | liveness; the one route open without the token                         |
| `POST /jobs`               | submit a spec (cafe_service.specs); 201 with the queued job            |
| `POST /jobs?dry_run=true`  | check a spec and show its command; nothing is queued                   |
| `GET /jobs`                | newest first; `?state=` (repeatable) `&kind=&schedule_id=&limit=&offset=` |
| `GET /jobs/{id}`           | one job: state, reason, command, pid, host, times, exit code           |
| `GET /jobs/{id}/logs`      | its log, followed while it runs; `?follow=false` a snapshot; `offset=` |
| `POST /jobs/{id}/cancel`   | queued: cancelled now; running: SIGTERM to its group, later SIGKILL    |
| `GET /jobs/{id}/artifacts` | the files under its output folder, with sizes                          |
| `POST /schedules`          | a recurring build-data job: `{cron, input, output, preset, overrides}` |
| `GET /schedules`           | every schedule with its latest firings                                 |
| `GET /schedules/{id}`      | one schedule and its firings (submitted, skipped, refused: reasons)    |
| `DELETE /schedules/{id}`   | remove it (its jobs stay)                                              |

Every error is `{"error": MESSAGE, "field": FIELD}` (validation adds `problems`, one per problem):
401 no or wrong token, 403 a path outside the data roots, 404 no such job or schedule, 409 cancelling
an ended job, 413 a body over the limit, 422 a malformed spec (unknown kind, missing field, wrong type,
`..`), a body that is not UTF-8 JSON or is nested more than 32 levels (`body`), or an id or offset that
is not a whole number from 1 (0 for offsets) to 2^63-1, the most SQLite stores (`job_id`, `schedule_id`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathPart
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException

from cafe_service.artifacts import list_artifacts
from cafe_service.body import json_body
from cafe_service.errors import MAX_ID, NotFound, ServiceError, validation_body
from cafe_service.guard import Guard
from cafe_service.logs import follow_log
from cafe_service.runner import JobLauncher
from cafe_service.schedules import ScheduleRequest
from cafe_service.service import Service
from cafe_service.settings import ServiceSettings
from cafe_service.specs import JOB_SPEC, KINDS, SpecBase, parse_spec
from cafe_service.store import ACTIVE, STATES, TERMINAL, Job
from cafe_service.wrapper import LOG_NAME

MAX_PAGE = 500
LOG_POLL_S = 0.25
# Ids and offsets go to SQLite (and seek), whose integers are signed 64-bit: a larger one would be an
# OverflowError (500), so the path and query types stop it (422 naming the argument).
JobId = Annotated[int, PathPart(ge=1, le=MAX_ID, description="a job id, as `GET /jobs` lists them")]
ScheduleId = Annotated[int, PathPart(ge=1, le=MAX_ID, description="a schedule id, as `GET /schedules` lists them")]
RowOffset = Annotated[int, Query(ge=0, le=MAX_ID)]
SpecBody = Annotated[SpecBase, Depends(json_body(JOB_SPEC))]
ScheduleBody = Annotated[ScheduleRequest, Depends(json_body(TypeAdapter(ScheduleRequest)))]
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
assert set(State.__args__) == set(STATES)  # type: ignore[attr-defined]


def create_app(
    settings: ServiceSettings,
    *,
    clock: Callable[[], float] = time.time,
    launcher: JobLauncher | None = None,
) -> Guard:
    """The ASGI app: FastAPI behind the token and size guard. `.app.state.service` is the Service.

    The runner and scheduler threads start with the app (its lifespan) and stop with it."""
    service = Service(settings, clock=clock, launcher=launcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    api = FastAPI(title="cafe training service", lifespan=lifespan, docs_url=None, redoc_url=None)
    api.state.service = service
    store = service.store

    @api.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(list(exc.errors()), KINDS), status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        field = getattr(exc, "field", None)
        return JSONResponse({"error": str(exc.detail), "field": field}, status_code=exc.status_code)

    def job_or_404(job_id: int) -> Job:
        job = store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}; `GET /jobs` lists them")
        return job

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/jobs", status_code=201)
    def submit(spec: SpecBody, dry_run: bool = False) -> Any:
        if dry_run:  # checked and turned into its command, not queued
            kind, checked, command_for = service.make_job(spec)
            job_dir = settings.jobs_dir / "ID"
            return JSONResponse({"kind": kind, "spec": checked, "command": command_for(job_dir)}, status_code=200)
        return service.submit(spec).to_json()

    @api.get("/jobs")
    def jobs(
        state: Annotated[list[State], Query()] = [],  # noqa: B006 - FastAPI reads the default, never mutates it
        kind: Annotated[Literal[KINDS] | None, Query()] = None,  # type: ignore[valid-type]
        schedule_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: RowOffset = 0,
    ) -> dict[str, Any]:
        found, total = store.list_jobs(states=state, kind=kind, schedule_id=schedule_id, limit=limit, offset=offset)
        return {"jobs": [job.to_json() for job in found], "total": total, "limit": limit, "offset": offset}

    @api.get("/jobs/{job_id}")
    def job(job_id: JobId) -> dict[str, Any]:
        return job_or_404(job_id).to_json()

    @api.get("/jobs/{job_id}/logs")
    def logs(job_id: JobId, follow: bool = True, offset: RowOffset = 0) -> StreamingResponse:
        found = job_or_404(job_id)

        def ended() -> bool:
            current = store.get(job_id)
            return current is None or current.state in TERMINAL

        stream = follow_log(
            Path(found.job_dir) / LOG_NAME,
            offset=offset,
            is_done=ended,
            poll_s=LOG_POLL_S,
            follow=follow and found.state in ACTIVE,
        )
        return StreamingResponse(stream, media_type="text/plain; charset=utf-8", headers={"x-job-state": found.state})

    @api.post("/jobs/{job_id}/cancel", status_code=202)
    def cancel(job_id: JobId) -> dict[str, Any]:
        return service.cancel(job_id).to_json()

    @api.get("/jobs/{job_id}/artifacts")
    def artifacts(job_id: JobId) -> dict[str, Any]:
        found = job_or_404(job_id)
        output = parse_spec(found.spec).output_path()
        listing = list_artifacts(output) if output is not None else {"root": None, "files": []}
        return {"job": job_id, "state": found.state, **listing}

    @api.post("/schedules", status_code=201)
    def add_schedule(request: ScheduleBody) -> dict[str, Any]:
        return service.add_schedule(request).to_json()

    @api.get("/schedules")
    def schedules() -> dict[str, Any]:
        return {
            "schedules": [
                {**s.to_json(), "runs": [r.to_json() for r in store.schedule_runs(s.id, limit=5)]}
                for s in store.list_schedules()
            ]
        }

    @api.get("/schedules/{schedule_id}")
    def schedule(schedule_id: ScheduleId, runs: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20) -> dict[str, Any]:
        found = store.get_schedule(schedule_id)
        if found is None:
            raise NotFound(f"no schedule {schedule_id}; `GET /schedules` lists them")
        return {**found.to_json(), "runs": [r.to_json() for r in store.schedule_runs(schedule_id, limit=runs)]}

    @api.delete("/schedules/{schedule_id}")
    def remove_schedule(schedule_id: ScheduleId) -> dict[str, Any]:
        if not store.remove_schedule(schedule_id):
            raise NotFound(f"no schedule {schedule_id}; `GET /schedules` lists them")
        return {"id": schedule_id, "removed": True}

    return Guard(api, token=settings.token, max_body_bytes=settings.max_body_bytes)
