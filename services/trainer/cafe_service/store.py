"""The job store: jobs, schedules and schedule firings in one SQLite file (WAL mode).

    store = JobStore("svc/service.db")
    job = store.add_job(kind="train", spec={...}, command_for=lambda job_dir: ["cafe", "train", ...],
                        jobs_dir=Path("svc/jobs"), now=time.time())
    store.claim(job.id, now)                    # queued -> running, if still queued
    store.finish(job.id, "succeeded", None, exit_code=0, now=now)

One connection behind a lock, each call one short transaction (`BEGIN IMMEDIATE` for writes), so the
API's threads, the runner and the scheduler never interleave inside a change. WAL keeps readers from
blocking the writer, and the file survives a SIGKILL of the service: a restart reads what was committed.

Job states: queued -> running -> succeeded | failed | cancelled; queued -> cancelled.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
SUBMITTED, SKIPPED, REFUSED = "submitted", "skipped", "refused"  # what a schedule firing did

CommandFor = Callable[[Path], list[str]]  # a job's folder -> its command line

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    job_dir TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    host TEXT,
    node_id TEXT,
    process_start_time REAL,
    exit_code INTEGER,
    cancel_requested_at REAL,
    schedule_id INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cron TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_fire_at REAL NOT NULL,
    last_job_id INTEGER
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id INTEGER NOT NULL,
    due_at REAL NOT NULL,
    fired_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    job_id INTEGER,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_schedule ON schedule_runs (schedule_id, id);
"""


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 in UTC (the API's time format)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    spec: dict[str, Any]
    command: list[str]
    state: str
    reason: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    job_dir: str
    pid: int | None
    host: str | None
    node_id: str | None
    process_start_time: float | None
    exit_code: int | None
    cancel_requested_at: float | None
    schedule_id: int | None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        for name in ("created_at", "started_at", "ended_at", "cancel_requested_at"):
            record[name] = iso(record[name])
        record.pop("process_start_time")
        record.pop("node_id")
        return record


@dataclass(frozen=True)
class Schedule:
    id: int
    cron: str
    spec: dict[str, Any]
    created_at: float
    next_fire_at: float
    last_job_id: int | None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["created_at"] = iso(self.created_at)
        record["next_fire_at"] = iso(self.next_fire_at)
        return record


@dataclass(frozen=True)
class ScheduleRun:
    id: int
    schedule_id: int
    due_at: float
    fired_at: float
    outcome: str
    job_id: int | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["due_at"] = iso(self.due_at)
        record["fired_at"] = iso(self.fired_at)
        return record


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["spec"] = json.loads(values["spec"])
    values["command"] = json.loads(values["command"])
    return Job(**values)


def _schedule(row: sqlite3.Row) -> Schedule:
    values = dict(row)
    values["spec"] = json.loads(values["spec"])
    return Schedule(**values)


class JobStore:
    """Jobs and schedules in SQLite at `path` (its folder is created)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed change survives a process kill
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # jobs

    def add_job(
        self,
        *,
        kind: str,
        spec: dict[str, Any],
        command_for: CommandFor,
        jobs_dir: Path,
        now: float,
        schedule_id: int | None = None,
    ) -> Job:
        """A new queued job; its folder is `jobs_dir/ID` (created by the runner when it starts), its
        command `command_for(job folder)`."""
        with self._write() as db:
            job_id = self._insert_job(db, kind, spec, command_for, jobs_dir, now, schedule_id)
        job = self.get(job_id)
        assert job is not None
        return job

    @staticmethod
    def _insert_job(
        db: sqlite3.Connection,
        kind: str,
        spec: dict[str, Any],
        command_for: CommandFor,
        jobs_dir: Path,
        now: float,
        schedule_id: int | None,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO jobs (kind, spec, command, state, created_at, schedule_id) VALUES (?, ?, '[]', ?, ?, ?)",
            (kind, json.dumps(spec), QUEUED, now, schedule_id),
        )
        job_id = int(cursor.lastrowid)
        job_dir = jobs_dir / str(job_id)
        db.execute(
            "UPDATE jobs SET job_dir = ?, command = ? WHERE id = ?",
            (str(job_dir), json.dumps(command_for(job_dir)), job_id),
        )
        return job_id

    def get(self, job_id: int) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        kind: str | None = None,
        schedule_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Jobs newest first, with the number matching the filters."""
        where, params = [], []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params += list(states)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if schedule_id is not None:
            where.append("schedule_id = ?")
            params.append(schedule_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {clause}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM jobs {clause} ORDER BY id DESC LIMIT ? OFFSET ?", [*params, limit, offset]
            ).fetchall()
        return [_job(row) for row in rows], int(total)

    def in_state(self, state: str, limit: int = 10_000) -> list[Job]:
        """Jobs in `state`, oldest first (the queue's order)."""
        return [
            _job(row) for row in self._read("SELECT * FROM jobs WHERE state = ? ORDER BY id LIMIT ?", (state, limit))
        ]

    def count(self, state: str) -> int:
        return int(self._read("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,))[0][0])

    def claim(self, job_id: int, now: float) -> bool:
        """queued -> running; False when the job was no longer queued (cancelled meanwhile)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, started_at = ? WHERE id = ? AND state = ?", (RUNNING, now, job_id, QUEUED)
            )
            return cursor.rowcount == 1

    def requeue(self, job_id: int) -> None:
        """running -> queued, for a job claimed but not started (Ray unavailable); it keeps its place (id)."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, started_at = NULL WHERE id = ? AND state = ? AND pid IS NULL",
                (QUEUED, job_id, RUNNING),
            )

    def set_process(self, job_id: int, *, pid: int, host: str, node_id: str | None, start_time: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET pid = ?, host = ?, node_id = ?, process_start_time = ? WHERE id = ?",
                (pid, host, node_id, start_time, job_id),
            )

    def finish(
        self,
        job_id: int,
        state: str,
        reason: str | None,
        *,
        exit_code: int | None,
        now: float,
        from_states: Sequence[str] = ACTIVE,
    ) -> bool:
        """A job in one of `from_states` ends in `state`; False when it was not (e.g. it had already ended:
        its first end stands)."""
        assert state in TERMINAL, state
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE jobs SET state = ?, reason = ?, exit_code = ?, ended_at = ? "
                f"WHERE id = ? AND state IN ({', '.join('?' * len(from_states))})",
                (state, reason, exit_code, now, job_id, *from_states),
            )
            return cursor.rowcount == 1

    def request_cancel(self, job_id: int, now: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE id = ?", (now, job_id)
            )

    # schedules

    def add_schedule(self, *, cron: str, spec: dict[str, Any], next_fire_at: float, now: float) -> Schedule:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO schedules (cron, spec, created_at, next_fire_at) VALUES (?, ?, ?, ?)",
                (cron, json.dumps(spec), now, next_fire_at),
            )
            schedule_id = int(cursor.lastrowid)
        schedule = self.get_schedule(schedule_id)
        assert schedule is not None
        return schedule

    def get_schedule(self, schedule_id: int) -> Schedule | None:
        rows = self._read("SELECT * FROM schedules WHERE id = ?", (schedule_id,))
        return _schedule(rows[0]) if rows else None

    def list_schedules(self) -> list[Schedule]:
        return [_schedule(row) for row in self._read("SELECT * FROM schedules ORDER BY id")]

    def remove_schedule(self, schedule_id: int) -> bool:
        """Deletes the schedule and its firing records; jobs it started stay."""
        with self._write() as db:
            db.execute("DELETE FROM schedule_runs WHERE schedule_id = ?", (schedule_id,))
            return db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1

    def due_schedules(self, now: float) -> list[Schedule]:
        return [
            _schedule(row) for row in self._read("SELECT * FROM schedules WHERE next_fire_at <= ? ORDER BY id", (now,))
        ]

    def schedule_runs(self, schedule_id: int, limit: int = 20) -> list[ScheduleRun]:
        rows = self._read(
            "SELECT * FROM schedule_runs WHERE schedule_id = ? ORDER BY id DESC LIMIT ?", (schedule_id, limit)
        )
        return [ScheduleRun(**dict(row)) for row in rows]

    def fire_schedule(
        self,
        schedule: Schedule,
        *,
        now: float,
        next_fire_at: float,
        job: tuple[str, dict[str, Any], CommandFor] | None,
        jobs_dir: Path,
        refused: str | None = None,
    ) -> ScheduleRun:
        """One firing of a due schedule, in one transaction: a new job (kind, spec, command_for), unless the
        schedule's previous job is still queued or running (skipped) or its spec was refused (`refused`)."""
        with self._write() as db:
            current = db.execute(
                "SELECT next_fire_at, last_job_id FROM schedules WHERE id = ?", (schedule.id,)
            ).fetchone()
            if current is None or current["next_fire_at"] != schedule.next_fire_at:
                # Removed, or fired by someone else since it was read: nothing to do.
                raise LookupError(f"schedule {schedule.id} changed while firing")
            previous = None
            if current["last_job_id"] is not None:
                previous = db.execute("SELECT id, state FROM jobs WHERE id = ?", (current["last_job_id"],)).fetchone()
            job_id, reason = None, None
            if previous is not None and previous["state"] in ACTIVE:
                outcome = SKIPPED
                reason = f"the previous run, job {previous['id']}, is still {previous['state']}"
            elif refused is not None or job is None:
                outcome, reason = REFUSED, refused
            else:
                outcome = SUBMITTED
                kind, spec, command_for = job
                job_id = self._insert_job(db, kind, spec, command_for, jobs_dir, now, schedule.id)
                db.execute("UPDATE schedules SET last_job_id = ? WHERE id = ?", (job_id, schedule.id))
            db.execute("UPDATE schedules SET next_fire_at = ? WHERE id = ?", (next_fire_at, schedule.id))
            cursor = db.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, job_id, reason) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (schedule.id, schedule.next_fire_at, now, outcome, job_id, reason),
            )
            run_id = int(cursor.lastrowid)
        return ScheduleRun(run_id, schedule.id, schedule.next_fire_at, now, outcome, job_id, reason)
