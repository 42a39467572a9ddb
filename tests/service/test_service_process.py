"""The pieces under the runner, on real processes and a real SQLite file (no server, no Ray): the job
wrapper, the true-state judgement of reconciliation, the store's durability, the layering."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from service_helpers import wait_for

from cafe_service import process
from cafe_service.reconcile import LOST_REASON, Ended, Lost, StillRunning, judge, reconcile
from cafe_service.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore


class LocalLauncher:
    """What reconciliation asks of a launcher, answered on this machine (the real psutil checks)."""

    def alive(self, record: dict) -> bool:
        return process.is_alive(record["pid"], record["start_time"])

    def signal(self, record: dict, signum: int) -> bool:
        return process.signal_group(record["pid"], record["start_time"], signum)


def run_wrapper(job_dir: Path, code: str) -> dict:
    """Start the wrapper on `python -c CODE` as the launcher task does; the process record it prints."""
    job_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "cafe_service.wrapper",
        "--job-dir",
        str(job_dir),
        "--",
        sys.executable,
        "-c",
        code,
    ]
    started = subprocess.run(command, capture_output=True, text=True, timeout=60, start_new_session=True, check=True)
    return json.loads(started.stdout.splitlines()[0])


def add_running(store: JobStore, jobs_dir: Path, record: dict | None = None) -> int:
    job = store.add_job(kind="train", spec={}, command_for=lambda _: ["cafe"], jobs_dir=jobs_dir, now=time.time())
    store.claim(job.id, time.time())
    if record is not None:
        store.set_process(job.id, pid=record["pid"], host=record["host"], node_id=None, start_time=record["start_time"])
    return job.id


def test_the_wrapper_records_the_process_the_log_and_the_exit(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    record = run_wrapper(job_dir, "import sys; print('hello from the job'); sys.exit(3)")
    assert record == json.loads((job_dir / "process.json").read_text())
    exit_record = wait_for(lambda: process.read_exit(job_dir), timeout_s=30, what="exit.json")
    assert exit_record["exit_code"] == 3 and exit_record["signal"] is None
    log = (job_dir / "log.txt").read_text()
    assert "hello from the job" in log and "# cafe-service: exit code 3" in log
    assert process.last_log_line(job_dir) == "hello from the job"
    assert not process.is_alive(record["pid"], record["start_time"])
    assert not list(job_dir.glob(".*tmp*"))  # records are renamed into place


def test_sigterm_to_the_group_ends_the_command_and_is_recorded(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    record = run_wrapper(job_dir, "import time; print('started', flush=True); time.sleep(60)")
    wait_for(lambda: "started" in (job_dir / "log.txt").read_text(), timeout_s=30, what="the command to start")
    assert process.is_alive(record["pid"], record["start_time"])
    assert not process.is_alive(record["pid"], record["start_time"] - 100)  # same pid, another start: not the job
    assert process.signal_group(record["pid"], record["start_time"], signal.SIGTERM)
    exit_record = wait_for(lambda: process.read_exit(job_dir), timeout_s=30, what="exit.json")
    assert exit_record["exit_code"] == -signal.SIGTERM and exit_record["signal"] == "SIGTERM"
    assert exit_record["received"] == ["SIGTERM"]


def test_a_sigterm_as_soon_as_the_pid_is_known_is_never_lost(tmp_path: Path) -> None:
    """The race of a cancel right after the start: the signal must end the command, whenever it lands."""
    for attempt in range(5):
        job_dir = tmp_path / f"job-{attempt}"
        record = run_wrapper(job_dir, "import time; time.sleep(60)")
        process.signal_group(record["pid"], record["start_time"], signal.SIGTERM)
        exit_record = wait_for(lambda d=job_dir: process.read_exit(d), timeout_s=20, what=f"exit.json ({attempt})")
        assert exit_record["exit_code"] == -signal.SIGTERM and exit_record["received"] == ["SIGTERM"]


def test_the_true_state_of_running_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "service.db")
    jobs_dir = tmp_path / "jobs"
    launcher = LocalLauncher()

    ended = add_running(store, jobs_dir)
    run_wrapper(jobs_dir / str(ended), "print('done')")
    wait_for(lambda: process.read_exit(jobs_dir / str(ended)), timeout_s=30, what="exit.json")

    alive = add_running(store, jobs_dir)  # no pid in the store: found through process.json
    alive_record = run_wrapper(jobs_dir / str(alive), "import time; time.sleep(60)")

    killed = add_running(store, jobs_dir)
    killed_record = run_wrapper(jobs_dir / str(killed), "import time; time.sleep(60)")
    process.signal_group(killed_record["pid"], killed_record["start_time"], signal.SIGKILL)
    wait_for(lambda: not process.is_alive(killed_record["pid"], killed_record["start_time"]), timeout_s=30, what="kill")

    never_started = add_running(store, jobs_dir)
    reused = add_running(store, jobs_dir, {"pid": alive_record["pid"], "host": process.HOST, "start_time": 1.0})
    queued = store.add_job(kind="eval", spec={}, command_for=lambda _: ["cafe"], jobs_dir=jobs_dir, now=time.time())

    assert isinstance(judge(store.get(ended), launcher), Ended)
    assert isinstance(judge(store.get(alive), launcher), StillRunning)
    assert isinstance(judge(store.get(killed), launcher), Lost)
    assert isinstance(judge(store.get(reused), launcher), Lost)  # a live pid, but not the job's process

    results = dict(reconcile(store, launcher, now=time.time()))
    assert results == {ended: SUCCEEDED, alive: RUNNING, killed: FAILED, never_started: FAILED, reused: FAILED}
    assert store.get(alive).pid == alive_record["pid"]  # adopted from process.json
    assert store.get(killed).reason == LOST_REASON and store.get(never_started).reason == LOST_REASON
    assert store.get(queued.id).state == QUEUED  # queued jobs stay queued

    store.request_cancel(alive, time.time())
    process.signal_group(alive_record["pid"], alive_record["start_time"], signal.SIGTERM)
    wait_for(lambda: process.read_exit(jobs_dir / str(alive)), timeout_s=30, what="exit.json")
    assert dict(reconcile(store, launcher, now=time.time())) == {alive: CANCELLED}
    store.close()


def test_the_store_is_wal_and_keeps_committed_changes(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    store = JobStore(path)
    job = store.add_job(kind="loop", spec={"a": 1}, command_for=lambda d: ["cafe", str(d)], jobs_dir=tmp_path, now=1.0)
    assert job.job_dir == str(tmp_path / str(job.id)) and job.command == ["cafe", job.job_dir]
    # A second connection (another process would see the same) reads what was committed, without a close.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()[0] == QUEUED
    assert store.finish(job.id, CANCELLED, "x", exit_code=None, now=2.0, from_states=(QUEUED,))
    assert not store.finish(job.id, FAILED, "later", exit_code=1, now=3.0)  # the first end stands
    assert other.execute("SELECT state, reason FROM jobs WHERE id = ?", (job.id,)).fetchone() == (CANCELLED, "x")
    other.close()
    store.close()


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import cafe_service, cafe_service.app, cafe_service.store", ("torch", "ray", "cafe_cli")),
        ("import cafe_cli.main", ("cafe_service", "fastapi", "uvicorn", "httpx", "ray")),
    ],
)
def test_the_layers_at_run_time(statement: str, absent: tuple[str, ...]) -> None:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert loaded.isdisjoint(absent), loaded & set(absent)


def test_serve_refuses_to_start_without_a_token_or_with_a_bad_root(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cafe_cli.main import app

    runner = CliRunner()
    no_token = runner.invoke(app, ["serve", "--db", str(tmp_path / "s.db")], env={"CAFE_SERVICE_TOKEN": ""})
    assert no_token.exit_code == 2 and "--token" in no_token.output and "CAFE_SERVICE_TOKEN" in no_token.output
    short = runner.invoke(app, ["serve", "--db", str(tmp_path / "s.db"), "--token", "short"])
    assert short.exit_code == 2 and "at least 8" in short.output
    missing = tmp_path / "missing"
    bad_root = runner.invoke(app, ["serve", "--root", str(missing), "--token", "long-enough-token"])
    assert bad_root.exit_code == 2 and str(missing) in bad_root.output and not (tmp_path / "s.db").exists()
