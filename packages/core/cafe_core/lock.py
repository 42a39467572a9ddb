"""`WriterLock`: one writer per folder (a shard set, a training run, a set's flags), held for the writer's life.

    with WriterLock("out/triples", "build-triples"):
        ...   # a second writer into out/triples is refused: WriterLockedError names this one

The lock is `fcntl.flock` on a file in the folder (`layout.LOCK_NAME` for sets and runs), taken on a
descriptor kept open while the writer lives. The kernel drops it when the process ends, however it
ends (SIGKILL included), so a lock file a killed writer leaves behind is never in force: the next
writer finds it free, says whose it was (stale) and takes it. The file records the holder's pid,
host, job, start time and a random token, so a refusal names whom to wait for or stop, and the other
processes of one job (workers of the driver that holds the lock) prove they belong to it with the
token (`check_token`) instead of taking the lock again.

Release unlinks the file while still holding the lock; a writer that opened the old file and then
wins the lock sees that its file is no longer the one at the path and opens it again, so two writers
never hold two different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cafe_core.layout import LOCK_NAME

log = logging.getLogger(__name__)

# A probe (`read_holder`, run by validate or a worker) takes the lock shared for a moment; a writer
# starting at that instant would see it held. It retries this long before it calls the lock taken.
PROBE_GRACE_S = 0.25
_RETRY_S = 0.02
_MAX_RECORD_BYTES = 4096


class WriterLockedError(BlockingIOError, RuntimeError):
    """The folder's lock is held by another writer; the message names it.

    A BlockingIOError (flock said EWOULDBLOCK) and a RuntimeError (the folder's state refuses the
    job), so callers that already report either as a user error report this one too.
    """


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """Who holds (`held`) or last held (a stale lock file) a folder's lock, as its lock file records it."""

    pid: int
    host: str
    job: str
    started_at: str  # ISO 8601, local time with offset
    token: str
    held: bool

    def is_this_process(self) -> bool:
        return self.held and self.pid == os.getpid() and self.host == socket.gethostname()

    def describe(self) -> str:
        if not self.pid:
            return "a writer that has not recorded itself yet"
        since = self.started_at
        with contextlib.suppress(ValueError):
            since = datetime.fromisoformat(self.started_at).strftime("%Y-%m-%d %H:%M:%S")
        text = f"pid {self.pid} on host {self.host} ({self.job}, since {since})"
        if self.held and self.host == socket.gethostname() and not pid_alive(self.pid):
            # flock belongs to the open file: a process that pid started (and that inherited it) holds it now.
            text += f"; pid {self.pid} is gone but a process it started still holds the lock: stop that one"
        return text


def _read_record(fd: int, held: bool) -> LockHolder | None:
    raw = os.pread(fd, _MAX_RECORD_BYTES, 0)
    if not raw.strip():
        return LockHolder(0, "", "", "", "", held) if held else None
    try:
        record = json.loads(raw)
        return LockHolder(
            int(record["pid"]),
            str(record["host"]),
            str(record.get("job", "")),
            str(record.get("started_at", "")),
            str(record.get("token", "")),
            held,
        )
    except (ValueError, KeyError, TypeError):  # torn by a crash mid-write: only the flock counts
        return LockHolder(0, "", "", "", "", held) if held else None


def read_holder(folder: str | Path, name: str = LOCK_NAME) -> LockHolder | None:
    """The holder of `folder`'s lock (`held` True), the last holder of a stale lock file (`held` False),
    or None when there is no lock file. Reads only; takes the lock shared for an instant to test it."""
    path = Path(folder) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        return _read_record(fd, held)
    finally:
        os.close(fd)  # drops the shared lock, if it was taken


def refusal(folder: Path, holder: LockHolder | None) -> str:
    who = holder.describe() if holder is not None else "another writer"
    stop = f" (kill {holder.pid})" if holder is not None and holder.pid else ""
    return f"{folder} is being written by {who}; wait for it to finish or stop it{stop}, then run again"


def refuse_if_held(folder: str | Path, name: str = LOCK_NAME) -> None:
    """WriterLockedError naming the holder when `folder`'s lock is held now: for a launcher whose workers
    take the lock themselves, so a second launch is refused before it writes anything into the folder."""
    holder = read_holder(folder, name)
    if holder is not None and holder.held:
        raise WriterLockedError(refusal(Path(folder), holder))


def check_token(folder: str | Path, token: str, name: str = LOCK_NAME) -> LockHolder:
    """Check that `folder`'s lock is held by the job whose token is `token` (a worker of its driver)."""
    folder = Path(folder)
    holder = read_holder(folder, name)
    if holder is None or not holder.held:
        raise RuntimeError(
            f"{folder}: the lock of the job this writer belongs to is not held (its driver ended or released it); "
            "run the job again"
        )
    if holder.token != token:
        raise WriterLockedError(refusal(folder, holder))
    return holder


class WriterLock:
    """An exclusive lock on `folder` for one writer (`job` names it in refusals), e.g. "build-triples".

    `acquire` (or `with`) takes it, refused at once with WriterLockedError naming the holder, or after
    polling for `wait_s` seconds (short writers such as flag updates wait for each other). Held until
    `release`, the end of the `with`, this object's collection, or the process's end. Creates the folder.
    """

    def __init__(self, folder: str | Path, job: str, *, name: str = LOCK_NAME, wait_s: float = 0.0) -> None:
        self.folder = Path(folder)
        self.job = job
        self.path = self.folder / name
        self.wait_s = wait_s
        self.token = secrets.token_hex(16)
        self.acquired_at: float | None = None  # time.time() when taken: temporaries older than it are dead
        self.previous: LockHolder | None = None  # the stale holder this lock took over, if any
        self._file = None
        self._pid = 0

    @property
    def held(self) -> bool:
        return self._file is not None

    def _open_locked(self) -> int:
        deadline = time.monotonic() + max(self.wait_s, PROBE_GRACE_S)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd, held=True)
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(_RETRY_S)
                    continue
                raise WriterLockedError(refusal(self.folder, holder)) from None
            try:
                here = os.stat(self.path)
                mine = os.fstat(fd)
                if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)  # a releasing holder unlinked the file after we opened it: open the new one

    def acquire(self) -> WriterLock:
        if self._file is not None:
            raise RuntimeError(f"{self.path}: this WriterLock is already held; release it first")
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"{self.folder}: is a file, not a folder; give a folder to write into")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = self._open_locked()
        self.acquired_at = time.time()
        self.previous = _read_record(fd, held=False)
        if self.previous is not None:
            log.warning(
                "%s: taking over a stale lock of %s (its writer ended without releasing it)",
                self.folder,
                self.previous.describe(),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "job": self.job,
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "token": self.token,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        # A file object, so the descriptor (and with it the lock) is closed if this object is dropped.
        self._file = os.fdopen(fd, "r+b", buffering=0)
        self._pid = os.getpid()
        return self

    def release(self) -> None:
        file, self._file = self._file, None
        if file is None:
            return
        try:
            # A forked child holds a copy of the descriptor, not the lock's ownership: it leaves the file.
            if os.getpid() == self._pid:
                with contextlib.suppress(FileNotFoundError):
                    here, mine = os.stat(self.path), os.fstat(file.fileno())
                    if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                        self.path.unlink()
        finally:
            file.close()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def is_stale_temp(path: Path, pid: int | None, lock: WriterLock) -> bool:
    """Whether a temporary under `lock`'s folder can be proven dead: its pid (from its name) runs on no
    process here, or it is older than `lock` (every writer makes its temporaries under the lock)."""
    if pid is not None and pid != os.getpid() and not pid_alive(pid):
        return True
    try:
        return lock.acquired_at is not None and path.lstat().st_mtime < lock.acquired_at
    except FileNotFoundError:
        return False
