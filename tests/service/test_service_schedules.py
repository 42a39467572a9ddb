"""Schedules fire on their cron times (the service's clock moved by the test, not a minute waited), as
incremental build-data jobs, and a firing due while the previous run is still active is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import TOKEN, OffsetClock, client, service_in_thread, wait_for, wait_for_state
from typer.testing import CliRunner

from cafe_cli.main import app as cafe_app
from cafe_service import ServiceSettings
from cafe_service.schedules import next_fire

runner = CliRunner()


@pytest.fixture(scope="module")
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture(scope="module")
def service(data_root: Path, tmp_path_factory: pytest.TempPathFactory, clock: OffsetClock) -> Iterator[tuple[str, Any]]:
    state = tmp_path_factory.mktemp("service-state")
    settings = ServiceSettings(
        db_path=state / "service.db", token=TOKEN, roots=[data_root], slots=1, poll_s=0.1, schedule_tick_s=0.05,
        cancel_grace_s=3,
    )  # fmt: skip
    with service_in_thread(settings, clock=clock) as served:
        yield served


@pytest.fixture(scope="module")
def http(service: tuple[str, Any]) -> Iterator[httpx.Client]:
    with client(service[0]) as connection:
        yield connection


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_next_fire_reads_cron_in_utc() -> None:
    at = datetime(2026, 3, 1, 10, 17, 5, tzinfo=UTC).timestamp()
    assert next_fire("* * * * *", at) == datetime(2026, 3, 1, 10, 18, tzinfo=UTC).timestamp()
    assert next_fire("0 * * * *", at) == datetime(2026, 3, 1, 11, 0, tzinfo=UTC).timestamp()
    assert next_fire("*/15 * * * *", at) == datetime(2026, 3, 1, 10, 30, tzinfo=UTC).timestamp()


def runs(http: httpx.Client, schedule_id: int, count: int) -> list[dict] | None:
    found = http.get(f"/schedules/{schedule_id}").json()["runs"]
    return list(reversed(found)) if len(found) >= count else None


@pytest.mark.ray
@pytest.mark.slow
def test_a_schedule_fires_and_an_overlapping_firing_is_skipped(
    http: httpx.Client, service: tuple[str, Any], clock: OffsetClock, local_ray
) -> None:
    added = runner.invoke(
        cafe_app,
        ["schedules", "add", "--cron", "* * * * *", "--input", "photos", "--output", "out/scheduled", "--json"],
        env={"CAFE_SERVICE_URL": service[0], "CAFE_SERVICE_TOKEN": TOKEN},
    )
    assert added.exit_code == 0, added.output
    schedule = http.get("/schedules").json()["schedules"][0]
    first_due = timestamp(schedule["next_fire_at"])
    assert schedule["runs"] == [] and first_due % 60 == 0

    clock.move_to(first_due + 0.5)  # the minute has come
    (fired,) = wait_for(lambda: runs(http, schedule["id"], 1), timeout_s=20, what="the first firing")
    assert fired["outcome"] == "submitted" and fired["due_at"] == schedule["next_fire_at"]
    job = http.get(f"/jobs/{fired['job_id']}").json()
    assert job["kind"] == "build-data" and job["schedule_id"] == schedule["id"]
    assert job["spec"]["mode"] == "incremental" and "--mode incremental" in " ".join(job["command"])

    clock.move_to(first_due + 60.5)  # the next minute, while the first run is still queued or running
    _, skipped = wait_for(lambda: runs(http, schedule["id"], 2), timeout_s=20, what="the second firing")
    assert skipped["outcome"] == "skipped" and skipped["job_id"] is None
    assert f"job {fired['job_id']}" in skipped["reason"] and "still" in skipped["reason"]
    assert http.get("/jobs", params={"schedule_id": schedule["id"]}).json()["total"] == 1

    http.post(f"/jobs/{fired['job_id']}/cancel")
    wait_for_state(http, fired["job_id"], ("cancelled",), timeout_s=60)
    clock.move_to(first_due + 120.5)  # the previous run has ended: this firing runs again
    _, _, third = wait_for(lambda: runs(http, schedule["id"], 3), timeout_s=20, what="the third firing")
    assert third["outcome"] == "submitted" and third["job_id"] != fired["job_id"]
    http.post(f"/jobs/{third['job_id']}/cancel")
    wait_for_state(http, third["job_id"], ("cancelled",), timeout_s=60)

    listed = runner.invoke(
        cafe_app, ["schedules", "list"], env={"CAFE_SERVICE_URL": service[0], "CAFE_SERVICE_TOKEN": TOKEN}
    )
    assert listed.exit_code == 0 and "submitted" in listed.output
    removed = runner.invoke(
        cafe_app,
        ["schedules", "remove", str(schedule["id"])],
        env={"CAFE_SERVICE_URL": service[0], "CAFE_SERVICE_TOKEN": TOKEN},
    )
    assert removed.exit_code == 0 and http.get("/schedules").json()["schedules"] == []
