"""A job's process on this machine: is it still the one we started, signal its group, read its records.

A process is identified by pid *and* start time (psutil's `create_time`), so a pid reused by another
process after a restart is never mistaken for the job, nor signalled.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import psutil

from cafe_service.wrapper import EXIT_NAME, LOG_MARK, LOG_NAME, PROCESS_NAME

START_TIME_TOLERANCE_S = 0.5  # create_time is derived from boot time and clock ticks: stable, not exact
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HOST = socket.gethostname()


def is_alive(pid: int, start_time: float) -> bool:
    """Whether process `pid`, started at `start_time`, is still running here (a zombie has ended)."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - start_time) > START_TIME_TOLERANCE_S:
            return False  # the pid was reused
        return process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_group(pid: int, start_time: float, signum: int) -> bool:
    """Send `signum` to the process group the job leads; False when that process is gone."""
    if not is_alive(pid, start_time):
        return False
    try:
        os.killpg(pid, signum)  # the wrapper called setsid(): its pid is the group's id
    except ProcessLookupError:
        return False
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_exit(job_dir: str | Path) -> dict[str, Any] | None:
    """JOBDIR/exit.json, written by the wrapper when the command ended; None before."""
    return _read_json(Path(job_dir) / EXIT_NAME)


def read_process(job_dir: str | Path) -> dict[str, Any] | None:
    """JOBDIR/process.json (pid, host, start_time), written by the wrapper when it started."""
    return _read_json(Path(job_dir) / PROCESS_NAME)


def last_log_line(job_dir: str | Path, max_bytes: int = 8192) -> str | None:
    """The command's last non-empty output line (without colours), for a failed job's reason."""
    path = Path(job_dir) / LOG_NAME
    try:
        with open(path, "rb") as file:
            file.seek(max(0, path.stat().st_size - max_bytes))
            tail = file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    lines = [ANSI.sub("", line).strip() for line in tail.splitlines()]
    lines = [line for line in lines if line and not line.startswith(LOG_MARK)]
    return lines[-1][:300] if lines else None
