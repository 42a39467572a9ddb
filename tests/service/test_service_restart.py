"""A restart loses nothing: `cafe serve` killed with SIGKILL mid-job and started again on the same database.

Job A's process outlives the service and ends on its own: the new service adopts it and records its true
end from its exit record. Job B's process is killed too (as a node restart would): it ends `failed` with
the `lost` reason. Job C was queued: it stays queued and starts in the slot B left.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest
from service_helpers import ServeProcess, client, job_state, kill_group, wait_for, wait_for_state

from cafe_service.reconcile import LOST_REASON

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY_TRAINING = {"max_steps": 2, "resolution_px": 64, "num_workers": 0, "batch_size": 2, "checkpoint_every": 2}


def train_spec(output: str) -> dict:
    return {"kind": "train", "shards": ["triples"], "output": output, "preset": "tiny", "overrides": TINY_TRAINING}


def test_a_killed_service_restarts_without_losing_a_job(data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "state" / "service.db"
    env = dict(os.environ)
    first = ServeProcess(db=db, roots=[data_root], slots=2, log_path=tmp_path / "serve-1.log", env=env)
    try:
        with client(first.url) as http:
            ids = [http.post("/jobs", json=train_spec(f"runs/restart-{n}")).json()["id"] for n in "abc"]
            survivor, lost, queued = ids
            for job_id in (survivor, lost):
                wait_for(
                    lambda j=job_id: job_state(http, j)["pid"], timeout_s=120, what=f"job {job_id} to have a process"
                )
            assert job_state(http, queued)["state"] == "queued"
            lost_pid = job_state(http, lost)["pid"]
            survivor_pid = job_state(http, survivor)["pid"]
    finally:
        first.kill()
    kill_group(lost_pid)
    wait_for(lambda: not psutil.pid_exists(lost_pid), timeout_s=30, what="the lost job's process to end")
    assert psutil.pid_exists(survivor_pid), "job A's process must outlive the service"
    assert not (Path(job_state_dir(db, lost)) / "exit.json").exists()

    restarted_at = time.time()
    second = ServeProcess(db=db, roots=[data_root], slots=2, log_path=tmp_path / "serve-2.log", env=env)
    try:
        with client(second.url) as http:
            ended = wait_for_state(http, lost, ("failed",), timeout_s=30)
            assert ended["reason"] == LOST_REASON and ended["exit_code"] is None
            done = wait_for_state(http, survivor, ("succeeded", "failed"), timeout_s=240)
            assert done["state"] == "succeeded" and done["exit_code"] == 0 and done["pid"] == survivor_pid, done
            files = {entry["path"] for entry in http.get(f"/jobs/{survivor}/artifacts").json()["files"]}
            assert "checkpoints/step-000002/trainable.safetensors" in files
            log = http.get(f"/jobs/{survivor}/logs", params={"follow": "false"}).text
            assert "checkpoint:" in log and "# cafe-service: exit code 0" in log

            started = wait_for(lambda: job_state(http, queued)["started_at"], timeout_s=120, what="job C to start")
            assert started > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(restarted_at - 1))
            assert http.post(f"/jobs/{queued}/cancel").status_code == 202
            assert wait_for_state(http, queued, ("cancelled",), timeout_s=60)["state"] == "cancelled"
    finally:
        second.stop()
    assert "reconciled job" in (tmp_path / "serve-2.log").read_text()


def job_state_dir(db: Path, job_id: int) -> Path:
    return db.parent / "jobs" / str(job_id)
