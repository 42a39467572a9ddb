"""The service's settings: where its database and job folders live, its data roots, slots and limits.

    settings = ServiceSettings(db_path="svc/service.db", roots=["/data"], token="s3cret-token", slots=2)

`cafe serve` builds one from its options. Required fields (the database, the token) have no defaults;
everything is checked on construction, with the fix in the message.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MIN_TOKEN_CHARS = 8
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # a job spec is a few hundred bytes; this leaves room for large override maps
TOKEN_HINT = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`"


@dataclass
class ServiceSettings:
    """What one `cafe serve` process runs with.

    db_path: the SQLite file of jobs and schedules (created with its folder).
    token: the bearer token every request but /health must carry.
    roots: the data roots; every path in a job spec must resolve inside one. Relative paths in a spec
        are taken relative to the first root. Default: the current folder.
    jobs_dir: the folder of per-job folders (JOBDIR = jobs_dir/ID: log.txt, exit.json, spec.json);
        default `jobs/` beside the database. On a Ray cluster it must be on storage every node writes.
    slots: jobs running at once; the rest wait in a FIFO queue.
    ray_address: the Ray cluster the jobs are launched on; None: a local Ray started on first use
        (`RAY_ADDRESS` when set, which is what `cafe serve` passes).
    poll_s: how often running jobs are checked (exit records, processes) and queued ones started.
    cancel_grace_s: seconds between SIGTERM and SIGKILL when a running job is cancelled.
    schedule_tick_s: how often the scheduler looks for due schedules.
    max_body_bytes: requests with a larger body are refused with 413.
    """

    db_path: Path
    token: str
    roots: Sequence[Path] = field(default_factory=lambda: [Path.cwd()])
    jobs_dir: Path | None = None
    slots: int = 2
    ray_address: str | None = None
    poll_s: float = 0.5
    cancel_grace_s: float = 10.0
    schedule_tick_s: float = 15.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        self.db_path = Path(self.db_path).expanduser().resolve()
        if not self.token or len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(f"token: use at least {MIN_TOKEN_CHARS} characters ({TOKEN_HINT})")
        if not self.roots:
            raise ValueError("roots: give at least one data root (--root DIR)")
        roots = []
        for root in self.roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"root {str(root)!r}: not a folder; every --root must be an existing folder")
            roots.append(path.resolve())
        self.roots = roots
        self.jobs_dir = (Path(self.jobs_dir) if self.jobs_dir else self.db_path.parent / "jobs").expanduser().resolve()
        if self.slots < 1:
            raise ValueError(f"slots: {self.slots} must be >= 1 (jobs running at once)")
        for name in ("poll_s", "schedule_tick_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be > 0 seconds")
        if self.cancel_grace_s < 0:
            raise ValueError(f"cancel_grace_s: {self.cancel_grace_s} must be >= 0 seconds")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes: {self.max_body_bytes} must be >= 1024")
        if self.ray_address is None:
            self.ray_address = os.environ.get("RAY_ADDRESS") or None
