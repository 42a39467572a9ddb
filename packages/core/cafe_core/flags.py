"""Flags: samples a person marked as bad, stored beside a set as `flags.parquet`.

    DIR/SET/flags.parquet    key (str), reason (str), flagged_at (timestamp, UTC); one row per key

Sets are immutable, so a bad sample is never removed from its tar: it is flagged here instead,
and whatever reads the set for use honours the flags. `cafe shards stats` leaves flagged
samples out of its rounds and distributions; the training loader must drop
`flagged_keys(root)` from what it yields.

The file is rewritten whole on each change, through a temporary file renamed over it, so a
reader sees the old flags or the new ones, never a torn file. Every write (the shard browser, a
script) holds the set's flag lock (`.flags.lock`, a `cafe_core.lock.WriterLock`) from its read to
its rename, so one writer's read-modify-write cannot drop another's flag; a writer waits up to
FLAG_LOCK_WAIT_S for the lock, then is refused with a message naming the holder. Under the lock
it removes the temporaries of flag writes that were killed (`.flags.parquet.{pid}.{random}.tmp`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cafe_core.keys import check_key
from cafe_core.layout import FLAGS_LOCK_NAME, FLAGS_NAME, SetLayout
from cafe_core.lock import WriterLock, is_stale_temp

log = logging.getLogger(__name__)

# A flag write takes milliseconds; one that holds the lock this long is stuck, and its holder is named.
FLAG_LOCK_WAIT_S = 30.0
MAX_REASON_CHARS = 500
FLAGS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("reason", pa.string()),
        ("flagged_at", pa.timestamp("s", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class Flag:
    """One flagged sample: its key, why a person flagged it, and when."""

    key: str
    reason: str
    flagged_at: datetime

    def __post_init__(self) -> None:
        check_key(self.key)
        object.__setattr__(self, "reason", check_reason(self.reason))
        if self.flagged_at.tzinfo is None:
            raise ValueError("Flag.flagged_at: expected a timezone-aware time (e.g. datetime.now(UTC))")


def check_reason(reason: object) -> str:
    """The reason, stripped; ValueError when it is empty, not text or too long."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("flag reason: say why the sample is bad (e.g. 'mask misses the subject')")
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"flag reason: {len(reason)} characters, at most {MAX_REASON_CHARS} allowed")
    return reason


def flags_path(root: str | Path) -> Path:
    return Path(root) / FLAGS_NAME


def read_flags(root: str | Path) -> list[Flag]:
    """The flags of the set in `root`, in the order they were added; [] when it has none."""
    path = flags_path(root)
    if not path.is_file():
        return []
    try:
        table = pq.read_table(path, schema=FLAGS_SCHEMA)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(
            f"{path}: not a readable flags file ({exc}); restore it from a backup, or delete it to drop every flag"
        ) from exc
    return [
        Flag(key, reason, flagged_at)
        for key, reason, flagged_at in zip(
            table.column("key").to_pylist(),
            table.column("reason").to_pylist(),
            table.column("flagged_at").to_pylist(),
            strict=True,
        )
    ]


def flagged_keys(root: str | Path) -> set[str]:
    """Keys of the samples flagged as bad in the set in `root`: readers for training must skip them.

    Reads only the key column; an empty set when the set has no flags file.
    """
    path = flags_path(root)
    if not path.is_file():
        return set()
    try:
        keys = pq.read_table(path, columns=["key"]).column("key").to_pylist()
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise ValueError(
            f"{path}: not a readable flags file ({exc}); restore it from a backup, or delete it to drop every flag"
        ) from exc
    return set(keys)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with WriterLock(root, "flags", name=FLAGS_LOCK_NAME, wait_s=FLAG_LOCK_WAIT_S) as lock:
        # Every flag temporary is made under this lock, so one that is here now is a killed write's.
        for temp, pid in SetLayout(root).flags_temp_files():
            if is_stale_temp(temp, pid, lock):
                log.info("removing %s, left by a flag write that did not finish", temp)
                temp.unlink(missing_ok=True)
        yield


def _check_unique(flags: Sequence[Flag]) -> None:
    keys = [f.key for f in flags]
    if len(set(keys)) != len(keys):
        raise ValueError("write_flags: a key appears twice; keep one flag per key")


def write_flags(root: str | Path, flags: Sequence[Flag]) -> Path:
    """Replace the set's flags file with `flags` (one row per key), atomically, under the flag lock."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such set folder to store flags in")
    with _locked(root):
        return _write_flags(root, flags)


def _write_flags(root: Path, flags: Sequence[Flag]) -> Path:
    _check_unique(flags)
    keys = [f.key for f in flags]
    table = pa.table(
        {
            "key": keys,
            "reason": [f.reason for f in flags],
            "flagged_at": [f.flagged_at.astimezone(UTC).replace(microsecond=0) for f in flags],
        },
        schema=FLAGS_SCHEMA,
    )
    path = flags_path(root)
    # A unique hidden temporary in the same folder, so the rename is atomic; the pid in its name
    # tells a later writer whether the process that made it still runs.
    fd, temp_name = tempfile.mkstemp(dir=root, prefix=f".{FLAGS_NAME}.{os.getpid()}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def add_flag(root: str | Path, key: str, reason: str, *, flagged_at: datetime | None = None) -> Flag:
    """Flag `key` as bad in the set in `root` (replacing an earlier flag of the same key)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such set folder to store flags in")
    flag = Flag(key, reason, (flagged_at or datetime.now(UTC)).replace(microsecond=0))  # as stored
    with _locked(root):
        kept = [f for f in read_flags(root) if f.key != key]
        _write_flags(root, [*kept, flag])
    return flag


def remove_flag(root: str | Path, key: str) -> bool:
    """Drop the flag of `key`; returns False when it was not flagged."""
    root = Path(root)
    check_key(key)
    if not flags_path(root).is_file():
        return False
    with _locked(root):
        flags = read_flags(root)
        kept = [f for f in flags if f.key != key]
        if len(kept) == len(flags):
            return False
        _write_flags(root, kept)
    return True
