"""`ShardSet`: a shard-set folder as a whole: its writer lock, preparing it for a write mode, and closing it.

    set = ShardSet("out/triples")
    with set.writer(mode="incremental") as w:     # one process: lock, prepare, write, close, unlock
        w.add(InputStatus.ok("img/0001.jpg"), [triple])

One writer per set: `prepare` (or `lock`) takes the set's lock (`.writer.lock`, see cafe_core.lock),
and any other writer, in this process or another, is refused with WriterLockedError naming the
holder. The lock stays held until `release()` (or the end of `with ShardSet(...)`, or the object's
or the process's end), so a job keeps it while it writes its reports beside the closed set.

Several processes: the driver calls `prepare(mode)` once and keeps the ShardSet, gives process r
of W a `ShardWriter(root, first_shard=start + r, shard_stride=W, skip_done=..., lock_token=
set.lock_token)`, and calls `close()` once after all of them are done, then `release()`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cafe_core.index import build_index, write_index
from cafe_core.layout import SetLayout, atomic_write
from cafe_core.lock import WriterLock, is_stale_temp
from cafe_core.stats import set_stats
from cafe_core.status import read_status_tables
from cafe_core.writer import ShardWriter

log = logging.getLogger(__name__)


class WriteMode(StrEnum):
    OVERWRITE = "overwrite"  # remove the set's files, start at shard 0
    INCREMENTAL = "incremental"  # keep done shards and their inputs, redo unfinished ones
    EXTEND = "extend"  # keep everything, append after the highest shard number


def parse_mode(mode: str | WriteMode) -> WriteMode:
    try:
        return WriteMode(mode)
    except ValueError:
        allowed = ", ".join(m.value for m in WriteMode)
        raise ValueError(f"mode: {mode!r} is not one of {allowed}") from None


class ShardSet:
    def __init__(self, root: str | Path, prefix: str = "shard") -> None:
        self.layout = SetLayout(Path(root), prefix)
        self._lock: WriterLock | None = None

    @property
    def root(self) -> Path:
        return self.layout.root

    def lock(self, job: str = "shard-writer") -> WriterLock:
        """Take the set's writer lock for `job` (named to writers it refuses), unless this object holds it.

        Raises WriterLockedError naming the holder when another writer has it. Held until `release`.
        """
        if self._lock is None:
            self._lock = WriterLock(self.root, job).acquire()
        return self._lock

    @property
    def lock_token(self) -> str:
        """The held lock's token: what `ShardWriter(lock_token=...)` in this job's other processes passes."""
        if self._lock is None:
            raise RuntimeError(f"{self.root}: the set is not locked by this ShardSet; call prepare() or lock() first")
        return self._lock.token

    def release(self) -> None:
        """Let other writers at the set again (a no-op when this object holds no lock)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> ShardSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def prepare(self, mode: str | WriteMode, job: str = "shard-writer") -> int:
        """Lock the set (see `lock`) and make it ready for writers in `mode`; returns the first shard number.

        Call once, before any writer starts. Every mode removes the set-level index and
        dataset.json (they describe a closed set, and this one is open again) and orphaned
        temporary files (every temporary here now is a dead writer's: writers make them under the lock).
        """
        mode = parse_mode(mode)
        layout = self.layout
        lock = self.lock(job)  # first: what follows reads and removes files only the set's writer may
        unfinished = sorted(set(layout.existing_numbers()) - set(layout.done_numbers()))
        if mode is WriteMode.EXTEND and unfinished:  # refuse before touching anything
            names = ", ".join(layout.shard_name(n) for n in unfinished[:5])
            raise RuntimeError(
                f"{layout.root}: cannot extend a set with unfinished shards ({names}); "
                "finish it with --mode incremental first"
            )
        for path in layout.temp_files():
            log.info("removing orphaned temporary file %s", path)
            path.unlink(missing_ok=True)
        for path in layout.stray_temp_files():  # a job's other files (its report), written the same way
            if path.is_file() and is_stale_temp(path, layout.temp_pid(path), lock):
                log.info("removing orphaned temporary file %s", path)
                path.unlink(missing_ok=True)
        layout.index_path.unlink(missing_ok=True)
        layout.dataset_path.unlink(missing_ok=True)
        if mode is WriteMode.OVERWRITE:
            for number in layout.existing_numbers():
                for path in layout.shard_paths(number):
                    path.unlink(missing_ok=True)
            return 0
        if mode is WriteMode.INCREMENTAL:
            return 0
        existing = layout.existing_numbers()
        return existing[-1] + 1 if existing else 0

    def done_input_keys(self) -> set[str]:
        """Input keys recorded in done shards: what an incremental rerun will not redo."""
        paths = [self.layout.status_path(n) for n in self.layout.done_numbers()]
        return set(read_status_tables(paths, columns=["input_key"]).column("input_key").to_pylist())

    def close(self, lineage: Mapping[str, Any] | None = None, fsync: bool = True) -> dict[str, Any]:
        """Seal the set after every writer is done: drop leftovers, write the index and dataset.json.

        Leftovers are temporaries and shards without stats.json, which only a crashed writer
        leaves; their inputs are not recorded as done, so the next incremental run redoes them.
        `lineage` records what made the set (input sets, checkpoints, the job's config).
        """
        layout = self.layout
        self.lock()  # a no-op for the job that prepared the set; anyone else must hold the set too
        pid = os.getpid()
        for path in layout.temp_files():
            path.unlink(missing_ok=True)
        for number in sorted(set(layout.existing_numbers()) - set(layout.done_numbers())):
            log.warning("removing unfinished shard %s (its writer did not finish)", layout.shard_name(number))
            for path in layout.shard_paths(number):
                path.unlink(missing_ok=True)
        write_index(layout, build_index(layout), pid, fsync)
        summary = self.summarize()
        summary["lineage"] = dict(lineage or {})
        summary["closed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write(
            layout.dataset_path,
            json.dumps(summary, indent=1, sort_keys=True).encode(),
            layout.temp_path(layout.dataset_path, pid),
            fsync,
        )
        return summary

    def summarize(self) -> dict[str, Any]:
        """Totals over the done shards, from their stats.json files only.

        Flags are left out: dataset.json records what the job wrote, while flags are a later,
        changing overlay that `cafe shards stats` reads fresh.
        """
        return set_stats(self.layout, distributions=False, honour_flags=False)

    @contextmanager
    def writer(
        self,
        mode: str | WriteMode = WriteMode.OVERWRITE,
        lineage: Mapping[str, Any] | None = None,
        **writer_options: Any,
    ) -> Iterator[ShardWriter]:
        """Lock and prepare, yield one writer, then close the set and unlock it (one process writing it all).

        On an error the shard being filled is dropped and the set is left open (no index), so
        `incremental` can finish it; the lock is released either way (unless it was held before).
        """
        mode = parse_mode(mode)
        took_lock = self._lock is None
        try:
            first = self.prepare(mode)
            with ShardWriter(
                self.root,
                prefix=self.layout.prefix,
                first_shard=first,
                skip_done=mode is WriteMode.INCREMENTAL,
                **writer_options,
            ) as writer:
                yield writer
            self.close(lineage, fsync=writer.fsync)
        finally:
            if took_lock:
                self.release()
