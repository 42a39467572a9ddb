"""The service's front door against a real server on 127.0.0.1: the token, malformed specs, paths that
leave the data roots, body limits, missing jobs, listing and pagination, 50 submissions at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import TOKEN, client, job_state, service_in_thread, wait_for_state

from cafe_service import ServiceSettings

BUILD = {"kind": "build-data", "input": "photos", "output": "out/built", "preset": "tiny"}
TRAIN = {"kind": "train", "shards": ["triples"], "output": "runs/a", "preset": "tiny"}


@pytest.fixture(scope="module")
def service(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    state = tmp_path_factory.mktemp("service-state")
    settings = ServiceSettings(
        db_path=state / "service.db",
        token=TOKEN,
        roots=[data_root],
        slots=1,
        poll_s=0.1,
        cancel_grace_s=3,
        max_body_bytes=4096,
    )
    with service_in_thread(settings) as served:
        yield served


@pytest.fixture(scope="module")
def http(service: tuple[str, Any]) -> Iterator[httpx.Client]:
    with client(service[0]) as connection:
        yield connection


@pytest.fixture(scope="module")
def roomy_http(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A service with the default body limit (64 KB), which a body nested 10000 levels deep fits in."""
    state = tmp_path_factory.mktemp("service-state-roomy")
    settings = ServiceSettings(db_path=state / "service.db", token=TOKEN, roots=[data_root], slots=1, poll_s=0.1)
    assert settings.max_body_bytes == 64 * 1024
    with service_in_thread(settings) as served, client(served[0]) as connection:
        yield connection


def refused(response: httpx.Response, status: int, field: str | None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert body["error"], body
    return body["error"]


# the token


def test_health_needs_no_token(service: tuple[str, Any]) -> None:
    assert httpx.get(f"{service[0]}/health").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/jobs", "/jobs/1", "/jobs/1/logs", "/schedules"])
def test_no_token_is_401_with_the_fix(service: tuple[str, Any], path: str) -> None:
    response = httpx.get(f"{service[0]}{path}")
    message = refused(response, 401, "authorization")
    assert "Authorization: Bearer" in message and "CAFE_SERVICE_TOKEN" in message
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_wrong_token_or_scheme_is_401(service: tuple[str, Any]) -> None:
    with client(service[0], token="wrong-token-000000") as wrong:
        assert "wrong token" in refused(wrong.get("/jobs"), 401, "authorization")
        assert "wrong token" in refused(wrong.post("/jobs", json=BUILD), 401, "authorization")
    basic = httpx.get(f"{service[0]}/jobs", headers={"authorization": f"Basic {TOKEN}"})
    refused(basic, 401, "authorization")


# malformed specs


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({**BUILD, "kind": "build-everything"}, "kind", "not a job kind"),
        ({k: v for k, v in BUILD.items() if k != "kind"}, "kind", "missing"),
        ({k: v for k, v in BUILD.items() if k != "output"}, "output", "required"),
        ({**TRAIN, "shards": "triples"}, "shards", "list"),
        ({**TRAIN, "launch": {"backend": "ray", "num_workers": "many"}}, "launch.num_workers", "integer"),
        ({**TRAIN, "launch": {"backend": "slurm", "num_workers": 2}}, "launch.backend", "ray"),
        ({**BUILD, "mode": "sometimes"}, "mode", "incremental"),
        ({**BUILD, "outptu": "x"}, "outptu", "not a field"),
        ({**BUILD, "preset": "../tiny"}, "preset", "pattern"),
        ({**TRAIN, "shards": []}, "shards", "at least 1"),
        ({"kind": "eval", "checkpoint": "runs/a", "eval_set": "e", "steps": 0}, "steps", "greater than"),
    ],
)
def test_malformed_specs_are_422_naming_the_field(http: httpx.Client, body: dict, field: str, words: str) -> None:
    assert words in refused(http.post("/jobs", json=body), 422, field)


def test_a_body_that_is_not_json_is_422(http: httpx.Client) -> None:
    response = http.post("/jobs", content=b"{kind: build-data", headers={"content-type": "application/json"})
    assert "not valid JSON" in refused(response, 422, "body")
    as_text = http.post("/jobs", content=b"{}", headers={"content-type": "text/plain"})
    assert "application/json" in refused(as_text, 422, "content-type")


@pytest.mark.parametrize("path", ["/jobs", "/schedules"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10000 + b"]" * 10000,
        b'{"kind": "build-data", "input": "photos", "output": "out/deep", "preset": "tiny", "overrides": '
        + b'{"a":' * 10000
        + b"1"
        + b"}" * 10001,
    ],
    ids=["lists", "overrides"],
)
def test_a_body_nested_10000_levels_deep_is_422(roomy_http: httpx.Client, path: str, body: bytes) -> None:
    assert len(body) < 64 * 1024  # within the size limit: refused for its depth
    response = roomy_http.post(path, content=body, headers={"content-type": "application/json"})
    assert "nested more than 32 levels" in refused(response, 422, "body")


def test_nesting_up_to_the_limit_is_read_and_brackets_in_strings_do_not_count(http: httpx.Client) -> None:
    deep = {"kind": "build-data", "input": "photos", "output": "out/deep", "preset": "tiny"}
    nested: dict = {"x": 1}
    for _ in range(30):  # 31 levels of overrides, 32 with the spec itself
        nested = {"a": nested}
    body = {**deep, "overrides": {**nested, "caption": "[[[[{{{{" * 20}}
    checked = http.post("/jobs", params={"dry_run": "true"}, json=body)
    assert checked.status_code == 200, checked.text
    assert f"--set={'a.' * 30}x=1" in "=".join(checked.json()["command"])


@pytest.mark.parametrize("path", ["/jobs", "/schedules"])
def test_a_body_with_invalid_utf8_is_422(http: httpx.Client, path: str) -> None:
    body = (
        b'{"kind": "build-data", "input": "photos-\xff\xfe", "output": "out/x", "preset": "tiny", "cron": "0 * * * *"}'
    )
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    message = refused(response, 422, "body")
    assert "not UTF-8" in message and "0xff" in message


def test_overrides_of_the_specs_own_fields_or_odd_values_are_refused(http: httpx.Client) -> None:
    message = refused(
        http.post("/jobs", json={**TRAIN, "overrides": {"output_dir": "runs/b"}}), 422, "overrides.output_dir"
    )
    assert "set by the spec itself" in message
    refused(http.post("/jobs", json={**TRAIN, "overrides": {"max steps": 2}}), 422, "overrides.max steps")
    nested = {"gates": {"min_box_score": {"deeper": [{"x": 1}]}}}
    refused(http.post("/jobs", json={**BUILD, "overrides": nested}), 422, "overrides.gates.min_box_score.deeper")


# paths


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**BUILD, "input": "photos/../../outside"}, 422, "input"),
        ({**BUILD, "input": "../outside"}, 422, "input"),
        ({**BUILD, "output": "/etc/cafe-out"}, 403, "output"),
        ({**BUILD, "input": "link-out"}, 403, "input"),
        ({**BUILD, "input": "link-out/secret.txt"}, 403, "input"),
        ({**TRAIN, "shards": ["triples", "/tmp"]}, 403, "shards.1"),
        ({**TRAIN, "overrides": {"model_cache_dir": "/var/tmp/models"}}, 403, "overrides.model_cache_dir"),
        ({**BUILD, "overrides": {"sam_checkpoint": "link-out/sam.pth"}}, 403, "overrides.sam_checkpoint"),
        ({"kind": "eval", "checkpoint": "runs/a", "eval_set": "s3://bucket/set"}, 422, "eval_set"),
        (
            {
                "kind": "loop",
                "output": "loop",
                "shards": ["triples"],
                "preset": "tiny",
                "train": {"model_cache_dir": "/x"},
            },
            403,
            "train.model_cache_dir",
        ),
    ],
)
def test_paths_leaving_the_roots_are_refused_naming_the_field(
    http: httpx.Client, body: dict, status: int, field: str
) -> None:
    message = refused(http.post("/jobs", json=body), status, field)
    assert "data roots" in message


def test_paths_inside_the_roots_are_resolved_absolute(http: httpx.Client, data_root: Path) -> None:
    body = {**TRAIN, "shards": ["triples", str(data_root / "triples")], "launch": {"backend": "ray", "num_workers": 2}}
    checked = http.post("/jobs", params={"dry_run": "true"}, json=body)
    assert checked.status_code == 200, checked.text
    assert checked.json()["spec"]["shards"] == [str(data_root / "triples")] * 2
    command = checked.json()["command"]
    assert command[:7] == ["cafe", "train", "launch", "--backend", "ray", "--num-workers", "2"]
    assert command[command.index("--output") + 1] == str(data_root / "runs" / "a")
    assert http.get("/jobs").json()["total"] == 0  # a dry run queues nothing


def test_overrides_become_set_options(http: httpx.Client) -> None:
    body = {**BUILD, "overrides": {"gates": {"min_box_score": 0.3}, "caption_max_new_tokens": None, "x": "a b"}}
    command = http.post("/jobs", params={"dry_run": "true"}, json=body).json()["command"]
    assert command[-6:] == [
        "--set",
        "gates.min_box_score=0.3",
        "--set",
        "caption_max_new_tokens=null",
        "--set",
        'x="a b"',
    ]


# sizes, ids


def test_a_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = {**BUILD, "overrides": {f"x{i}": "y" * 100 for i in range(100)}}
    refused(http.post("/jobs", json=big), 413, "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"kind": "build-data", "input": "'
        for _ in range(20):
            yield b"p" * 1000
        yield b'"}'

    refused(http.post("/jobs", content=chunks(), headers={"content-type": "application/json"}), 413, "body")


def test_unknown_jobs_are_404_and_bad_ids_422(http: httpx.Client) -> None:
    for path in ("/jobs/999999", "/jobs/999999/logs", "/jobs/999999/artifacts"):
        assert "no job 999999" in refused(http.get(path), 404, "id")
    refused(http.post("/jobs/999999/cancel"), 404, "id")
    refused(http.get("/jobs/abc"), 422, "job_id")
    refused(http.get("/jobs", params={"state": "sleeping"}), 422, "state.0")
    refused(http.get("/jobs", params={"limit": 0}), 422, "limit")


ID_ROUTES = [
    ("GET", "/jobs/{id}", "job_id"),
    ("POST", "/jobs/{id}/cancel", "job_id"),
    ("GET", "/jobs/{id}/logs", "job_id"),
    ("GET", "/jobs/{id}/artifacts", "job_id"),
    ("GET", "/schedules/{id}", "schedule_id"),
    ("DELETE", "/schedules/{id}", "schedule_id"),
    ("GET", "/jobs?schedule_id={id}", "schedule_id"),
]


@pytest.mark.parametrize("job_id", [2**63, 2**64, -1, 0, -(2**63) - 1])
@pytest.mark.parametrize(("method", "route", "field"), ID_ROUTES)
def test_ids_outside_sqlite_integers_are_422_not_500(
    http: httpx.Client, method: str, route: str, field: str, job_id: int
) -> None:
    """Ids go to SQLite, whose integers stop at 2^63-1: a larger one was an OverflowError and a 500."""
    message = refused(http.request(method, route.format(id=job_id)), 422, field)
    assert f"{job_id}" in message and "whole numbers from 1 to 9223372036854775807" in message


@pytest.mark.parametrize("route", ["/jobs/{id}", "/jobs/{id}/logs", "/schedules/{id}"])
def test_the_largest_id_is_a_plain_404(http: httpx.Client, route: str) -> None:
    refused(http.get(route.format(id=2**63 - 1)), 404, "id")
    assert http.get("/jobs", params={"schedule_id": 2**63 - 1}).json()["total"] == 0


@pytest.mark.parametrize("offset", [2**63, 2**64])
def test_offsets_outside_sqlite_integers_are_422(http: httpx.Client, offset: int) -> None:
    refused(http.get("/jobs", params={"offset": offset}), 422, "offset")
    refused(http.get("/jobs/1/logs", params={"offset": offset}), 422, "offset")


# 50 at once, one slot


@pytest.mark.ray
@pytest.mark.slow
def test_fifty_concurrent_submissions_are_all_recorded_and_slots_respected(
    http: httpx.Client, service: tuple[str, Any], local_ray
) -> None:
    url = service[0]
    lock = threading.Lock()
    ids: list[int] = []

    def submit_five(worker: int) -> None:
        with client(url) as own:
            for index in range(5):
                body = {**BUILD, "output": f"out/concurrent-{worker}-{index}"}
                response = own.post("/jobs", json=body)
                assert response.status_code == 201, response.text
                with lock:
                    ids.append(response.json()["id"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(submit_five, range(10)))
    assert len(ids) == len(set(ids)) == 50

    listed = http.get("/jobs", params={"limit": 500}).json()
    assert {job["id"] for job in listed["jobs"]} >= set(ids)
    first = min(ids)
    wait_for_state(http, first, ("running",), timeout_s=60)  # the one slot takes the oldest (FIFO)
    running = http.get("/jobs", params={"state": "running"}).json()
    assert running["total"] == 1 and running["jobs"][0]["id"] == first

    page = http.get("/jobs", params={"limit": 10, "offset": 5, "state": ["queued", "running"]}).json()
    assert len(page["jobs"]) == 10 and page["total"] >= 50
    assert [job["id"] for job in page["jobs"]] == sorted((job["id"] for job in page["jobs"]), reverse=True)

    for job_id in sorted(ids, reverse=True):  # the queued ones first, so none starts in the freed slot
        assert http.post(f"/jobs/{job_id}/cancel").status_code == 202
    ended = wait_for_state(http, first, ("cancelled",), timeout_s=60)
    assert ended["reason"].startswith("cancelled (")
    jobs = [job_state(http, job_id) for job_id in ids]
    assert all(job["state"] == "cancelled" for job in jobs)
    started = [job for job in jobs if job["started_at"] is not None]
    assert [job["id"] for job in started] == [first]
    assert all(job["reason"] == "cancelled before it started" for job in jobs if job["id"] != first)
    assert "already ended" in refused(http.post(f"/jobs/{first}/cancel"), 409, "id")
    # The cancelled job's log was written by the wrapper: the command, then how it ended.
    log = http.get(f"/jobs/{first}/logs", params={"follow": "false"}).text
    assert "$ cafe data build" in log


# schedules through the API (firing: test_service_schedules.py)


def test_schedules_are_validated_listed_and_removed(http: httpx.Client) -> None:
    body = {"cron": "0 * * * *", "input": "photos", "output": "out/scheduled", "preset": "tiny"}
    assert "cron expression" in refused(http.post("/schedules", json={**body, "cron": "every hour"}), 422, "cron")
    refused(http.post("/schedules", json={**body, "output": "/etc/x"}), 403, "output")
    refused(http.post("/schedules", json={**body, "mode": "overwrite"}), 422, "mode")
    added = http.post("/schedules", json=body)
    assert added.status_code == 201, added.text
    schedule = added.json()
    assert schedule["spec"]["mode"] == "incremental" and schedule["next_fire_at"].endswith(":00:00.000Z")
    assert any(s["id"] == schedule["id"] for s in http.get("/schedules").json()["schedules"])
    assert http.get(f"/schedules/{schedule['id']}").json()["runs"] == []
    assert http.delete(f"/schedules/{schedule['id']}").json() == {"id": schedule["id"], "removed": True}
    refused(http.delete(f"/schedules/{schedule['id']}"), 404, "id")
