"""Real jobs through a real server and a real local Ray: a tiny build-data and a tiny train job run to the
end, their logs followed as they run, their artifacts listed; a job that fails; the `cafe jobs` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import TOKEN, client, job_state, service_in_thread
from typer.testing import CliRunner

from cafe_cli.main import app as cafe_app
from cafe_service import ServiceSettings

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY_TRAINING = {"max_steps": 2, "resolution_px": 64, "num_workers": 0, "batch_size": 2, "checkpoint_every": 2}
runner = CliRunner()


@pytest.fixture(scope="module")
def service(data_root: Path, tmp_path_factory: pytest.TempPathFactory, local_ray) -> Iterator[tuple[str, Any]]:
    state = tmp_path_factory.mktemp("service-state")
    settings = ServiceSettings(db_path=state / "service.db", token=TOKEN, roots=[data_root], slots=2, poll_s=0.2)
    with service_in_thread(settings) as served:
        yield served


@pytest.fixture(scope="module")
def http(service: tuple[str, Any]) -> Iterator[httpx.Client]:
    with client(service[0]) as connection:
        yield connection


def cafe(url: str, *args: object):
    return runner.invoke(cafe_app, [str(a) for a in args], env={"CAFE_SERVICE_URL": url, "CAFE_SERVICE_TOKEN": TOKEN})


def follow(http: httpx.Client, job_id: int) -> tuple[str, int]:
    """The whole log, streamed until the job ends, and how many chunks it came in."""
    chunks = []
    with http.stream("GET", f"/jobs/{job_id}/logs", timeout=httpx.Timeout(30, read=300)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        chunks = [chunk for chunk in response.iter_bytes() if chunk]
    return b"".join(chunks).decode(), len(chunks)


@pytest.fixture(scope="module")
def finished_jobs(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """A build-data job on 2 photos and a train job of 2 steps, submitted together (2 slots), followed."""
    build = http.post(
        "/jobs", json={"kind": "build-data", "input": "photos", "output": "out/built", "preset": "tiny"}
    ).json()
    train = http.post(
        "/jobs",
        json={
            "kind": "train",
            "shards": ["triples"],
            "output": "runs/tiny",
            "preset": "tiny",
            "overrides": TINY_TRAINING,
        },
    ).json()
    assert build["state"] == train["state"] == "queued"
    train_log, _ = follow(http, train["id"])
    build_log, build_chunks = follow(http, build["id"])
    return {
        "build": {**job_state(http, build["id"]), "log": build_log, "chunks": build_chunks},
        "train": {**job_state(http, train["id"]), "log": train_log},
    }


def test_a_build_data_job_runs_to_the_end(finished_jobs: dict, http: httpx.Client, data_root: Path) -> None:
    job = finished_jobs["build"]
    assert job["state"] == "succeeded", job
    assert job["exit_code"] == 0 and job["pid"] and job["host"] and job["started_at"] and job["ended_at"]
    log = job["log"]
    assert log.startswith("# cafe-service: $ cafe data build --input " + str(data_root / "photos"))
    assert "build report" in log and "# cafe-service: exit code 0" in log
    assert job["chunks"] >= 2  # followed while it ran, not read once at the end
    listing = http.get(f"/jobs/{job['id']}/artifacts").json()
    assert listing["root"] == str(data_root / "out" / "built") and listing["exists"]
    names = {entry["path"]: entry["bytes"] for entry in listing["files"]}
    assert {"shard-000000.tar", "shard-000000.stats.json", "shardindex.json", "dataset.json"} <= set(names)
    assert names["shard-000000.tar"] == (data_root / "out" / "built" / "shard-000000.tar").stat().st_size
    assert listing["total_bytes"] == sum(names.values())
    exit_record = json.loads((Path(job["job_dir"]) / "exit.json").read_text())
    assert exit_record["exit_code"] == 0


def test_a_train_job_runs_to_the_end(finished_jobs: dict, http: httpx.Client, data_root: Path) -> None:
    job = finished_jobs["train"]
    assert job["state"] == "succeeded", job
    assert "$ cafe train run --shards " + str(data_root / "triples") in job["log"]
    assert "--set max_steps=2" in job["log"] and "checkpoint:" in job["log"]
    files = {entry["path"] for entry in http.get(f"/jobs/{job['id']}/artifacts").json()["files"]}
    assert {"metrics.jsonl", "checkpoints/step-000002/trainable.safetensors"} <= files


def test_a_snapshot_of_the_log_and_an_offset(finished_jobs: dict, http: httpx.Client) -> None:
    job = finished_jobs["train"]
    snapshot = http.get(f"/jobs/{job['id']}/logs", params={"follow": "false"}).text
    assert snapshot == job["log"]
    assert http.get(f"/jobs/{job['id']}/logs", params={"offset": 10}).text == job["log"][10:]


def test_a_failing_job_fails_with_the_commands_message(service: tuple[str, Any], http: httpx.Client) -> None:
    url = service[0]
    result = cafe(
        url, "jobs", "submit", "--kind", "train", "--set", "shards=[triples]", "--set", "output=runs/bad",
        "--set", "preset=tiny", "--set", "overrides.max_steps=0", "--follow",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    job_id = int(result.output.split()[1])
    job = job_state(http, job_id)
    assert job["state"] == "failed" and job["exit_code"] == 2
    assert job["reason"].startswith("exit code 2: ") and "max_steps" in job["reason"]
    assert "max_steps" in result.output


def test_the_jobs_client(finished_jobs: dict, service: tuple[str, Any], tmp_path: Path) -> None:
    url = service[0]
    build_id, train_id = finished_jobs["build"]["id"], finished_jobs["train"]["id"]
    listed = cafe(url, "jobs", "list", "--state", "succeeded", "--json")
    assert listed.exit_code == 0, listed.output
    assert {build_id, train_id} <= {job["id"] for job in json.loads(listed.output)["jobs"]}
    table = cafe(url, "jobs", "list")
    assert table.exit_code == 0 and "build-data" in table.output
    shown = cafe(url, "jobs", "show", train_id)
    assert shown.exit_code == 0 and "succeeded" in shown.output and "files" in shown.output
    logs = cafe(url, "jobs", "logs", build_id, "--follow")
    assert logs.exit_code == 0 and "build report" in logs.output
    assert cafe(url, "jobs", "show", 999999).exit_code == 1  # no such job: a result
    assert cafe(url, "jobs", "cancel", train_id).exit_code == 1  # already ended
    bad = cafe(
        url,
        "jobs",
        "submit",
        "--kind",
        "build-data",
        "--set",
        "input=../x",
        "--set",
        "output=o",
        "--set",
        "preset=tiny",
    )
    assert bad.exit_code == 2 and "input" in bad.output and "'..'" in bad.output
    dry = cafe(
        url, "jobs", "submit", "--kind", "eval", "--set", "checkpoint=runs/tiny", "--set", "eval_set=e", "--dry-run"
    )
    assert dry.exit_code == 0 and dry.output.startswith("cafe eval --checkpoint /"), dry.output
    spec = tmp_path / "spec.yaml"
    spec.write_text("kind: build-data\ninput: photos\noutput: /etc/x\npreset: tiny\n")
    outside = cafe(url, "jobs", "submit", spec)
    assert outside.exit_code == 2 and "output" in outside.output and "HTTP 403" in outside.output
    no_token = runner.invoke(cafe_app, ["jobs", "list", "--url", url], env={"CAFE_SERVICE_TOKEN": ""})
    assert no_token.exit_code == 2 and "--token" in no_token.output
    wrong = runner.invoke(cafe_app, ["jobs", "list", "--url", url, "--token", "wrong-token-xx"])
    assert wrong.exit_code == 2 and "wrong token" in wrong.output
    unreachable = runner.invoke(cafe_app, ["jobs", "list", "--url", "http://127.0.0.1:9", "--token", TOKEN])
    assert unreachable.exit_code == 2 and "cannot reach" in unreachable.output
