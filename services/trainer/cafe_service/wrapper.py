"""The job wrapper: runs one `cafe` command detached, logs it, and leaves its exit code behind.

    python -m cafe_service.wrapper --job-dir JOBDIR -- python -m cafe_cli.main data build ...

It forks once and the first process exits at once, so the job is no child of the Ray worker that
started it (Ray ends a worker's children with the worker) and outlives the service. The second
process starts a new session (its pid is the process group the service signals), writes
JOBDIR/process.json (pid, host, start time) and prints the same line on stdout for the launcher,
then runs the command with its output appended to JOBDIR/log.txt, and when it ends writes
JOBDIR/exit.json: `exit_code` (negative: killed by that signal), `signal`, `started_at`, `ended_at`.
Both JSON files are written to a temporary name and renamed, so a reader never sees half of one.
SIGTERM reaches the whole group; the wrapper itself stays to record how the command ended.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

PROCESS_NAME = "process.json"
EXIT_NAME = "exit.json"
LOG_NAME = "log.txt"
LOG_MARK = "# cafe-service:"  # lines the wrapper adds to the log start with this
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # noted by the wrapper; the command gets them too


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


def display(command: list[str]) -> str:
    """`python -m cafe_cli.main data build ...` -> `cafe data build ...`."""
    if len(command) >= 3 and command[1:3] == ["-m", "cafe_cli.main"]:
        return shlex.join(["cafe", *command[3:]])
    return shlex.join(command)


def _parse(argv: list[str]) -> tuple[Path, list[str]]:
    if len(argv) < 4 or argv[0] != "--job-dir" or argv[2] != "--":
        raise SystemExit("usage: python -m cafe_service.wrapper --job-dir JOBDIR -- COMMAND [ARG ...]")
    return Path(argv[1]), argv[3:]


def _child_setup() -> None:
    # In the command's process, between fork and exec: default actions, then unblock, so a signal sent
    # while it was being started ends it now rather than being caught by the wrapper's handler and lost.
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def _run(command: list[str], job_dir: Path, received: list[str]) -> int:
    """Run the command to its end; its exit code (negative: the signal that ended it)."""
    child = None
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # no signal lands between the check and the start
    try:
        if received:  # cancelled before the command could start: it is not started
            print(f"{LOG_MARK} {', '.join(received)} before the command started; not started", flush=True)
            return -signal.Signals[received[0]].value
        try:
            # preexec_fn is safe here: the wrapper runs one thread.
            child = subprocess.Popen(command, cwd=job_dir, preexec_fn=_child_setup)
        except OSError as exc:
            print(f"{LOG_MARK} could not start the command: {exc}", flush=True)
            return 127
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # a signal held back reaches note() now
    if received:  # sent to the group before the command's process existed: pass it on
        child.send_signal(signal.Signals[received[0]])
    return child.wait()


def main(argv: list[str] | None = None) -> None:
    job_dir, command = _parse(sys.argv[1:] if argv is None else argv)
    if not job_dir.is_dir():
        raise SystemExit(f"--job-dir {job_dir}: not a folder")
    if os.fork():
        os._exit(0)
    os.setsid()
    pid = os.getpid()

    # Signals first: from the moment the service can know the pid (process.json, stdout), a SIGTERM to
    # the group is noted here, never fatal, so the exit record is always written.
    received: list[str] = []

    def note(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)  # the command got it too (same process group)

    for signum in FORWARDED:
        signal.signal(signum, note)

    host = socket.gethostname()
    log_fd = os.open(job_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(log_fd, f"{LOG_MARK} $ {display(command)}  (pid {pid} on {host})\n".encode())
    record = {"pid": pid, "host": host, "start_time": psutil.Process(pid).create_time()}
    write_json_atomic(job_dir / PROCESS_NAME, record)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()

    # From here on, stdout and stderr are the log; the launcher's pipes close and it returns.
    null_fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(null_fd)

    started_at = time.time()
    code = _run(command, job_dir, received)
    ended_at = time.time()
    name = signal.Signals(-code).name if code < 0 else None
    ended = f"killed by {name}" if name else f"exit code {code}"
    print(f"{LOG_MARK} {ended} after {ended_at - started_at:.1f} s", flush=True)
    write_json_atomic(
        job_dir / EXIT_NAME,
        {"exit_code": code, "signal": name, "received": received, "started_at": started_at, "ended_at": ended_at},
    )
    os._exit(0)


if __name__ == "__main__":
    main()
