"""`ShardWriter`: writes triples and per-input status rows into numbered shards of a set.

One writer writes the shard numbers first_shard, first_shard + shard_stride, ... so several
processes can fill one set at once without coordination (process r of W uses first_shard=r,
shard_stride=W). Each input is added whole (its status row together with all its samples), so
an input never straddles two shards, and a shard commits in this order:

    .shard-000007.tar.PID.tmp -> shard-000007.tar              (the samples)
    .shard-000007.status.parquet.PID.tmp -> ...status.parquet  (one row per input)
    .shard-000007.stats.json.PID.tmp -> ...stats.json          (last: marks the shard done)

A process killed at any point leaves at most hidden temporaries and a shard without stats.json;
`incremental` mode treats both as unfinished and redoes them, skipping inputs already in done
shards, so a rerun ends with exactly the shards of an uninterrupted run.

One writer per set (cafe_core.lock): a writer works under the set's lock. In the process that
holds it (`ShardSet.prepare` / `ShardSet.writer`) it just writes; in another process of the same
job it shows the job's token (`lock_token=shard_set.lock_token`); with neither, it takes the lock
itself for its life. Any other writer is refused with WriterLockedError naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cafe_core.keys import check_key
from cafe_core.layout import SetLayout, atomic_write
from cafe_core.lock import WriterLock, WriterLockedError, check_token, read_holder, refusal
from cafe_core.status import InputStatus, read_status_tables, write_status_table
from cafe_core.tario import TarStreamWriter
from cafe_core.triple import MEMBERS, METADATA, Triple, TripleError

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class EncodedSample:
    """A triple already encoded to its five tar members (suffix -> bytes)."""

    key: str
    members: dict[str, bytes]
    metadata: dict[str, Any]

    @classmethod
    def from_triple(cls, triple: Triple) -> EncodedSample:
        return cls(triple.key, triple.encode(), triple.metadata)

    @classmethod
    def from_members(cls, key: str, members: dict[str, bytes]) -> EncodedSample:
        """From raw members; checks the key and that all five members are there."""
        check_key(key)
        missing = [m for m in MEMBERS if m not in members]
        if missing:
            raise TripleError(f"sample {key!r}: missing member(s) {', '.join(missing)}")
        return cls(key, members, json.loads(members[METADATA]))

    @property
    def num_bytes(self) -> int:
        return sum(len(v) for v in self.members.values())


class _OpenShard:
    """The shard being filled: its temporary tar, status rows and per-sample columns."""

    def __init__(self, layout: SetLayout, number: int, pid: int) -> None:
        self.number = number
        self.final_tar = layout.tar_path(number)
        self.temp_tar = layout.temp_path(self.final_tar, pid)
        self.file = open(self.temp_tar, "wb")  # noqa: SIM115 - closed in commit/abandon
        self.tar = TarStreamWriter(self.file)
        self.rows: list[tuple[InputStatus, list[str]]] = []
        self.samples: list[EncodedSample] = []
        self.payload_bytes = 0
        self.started = time.monotonic()

    @property
    def num_samples(self) -> int:
        return len(self.samples)


def _sample_columns(samples: Sequence[EncodedSample]) -> dict[str, Any]:
    """Per-sample key, round, subject and scores, columnar: what `stats` reads instead of the tars."""
    score_names = sorted({n for s in samples for n in s.metadata.get("scores", {})})
    quality_names = sorted({n for s in samples for n in s.metadata.get("quality", {})})
    return {
        "key": [s.key for s in samples],
        "round": [s.metadata["round"] for s in samples],
        "subject": [s.metadata["subject"] for s in samples],
        "scores": {n: [s.metadata["scores"].get(n) for s in samples] for n in score_names},
        "quality": {n: [s.metadata.get("quality", {}).get(n) for s in samples] for n in quality_names},
    }


def _reasons_by_status(rows: Sequence[tuple[InputStatus, list[str]]]) -> dict[str, dict[str, int]]:
    """{"skipped": {"gate.mask_area": 3}, "failed": {...}}: reason codes counted per status."""
    counts: dict[str, Counter[str]] = {}
    for status, _ in rows:
        if status.reason:
            counts.setdefault(status.status, Counter())[status.reason] += 1
    return {s: dict(sorted(c.items())) for s, c in sorted(counts.items())}


class ShardWriter:
    """Writes inputs (a status row plus zero or more triples each) into rolling shards.

    root: the set's folder (created if missing). Prepare it first with `ShardSet.prepare`
        when writing in overwrite or extend mode, and close the set with `ShardSet.close`
        when every writer is done; `ShardSet.writer` does both for one process.
    first_shard, shard_stride: the shard numbers this writer owns.
    max_samples, max_bytes, max_inputs: a shard rolls over before an input that would push
        it past either bound (a single input larger than a bound gets a shard of its own).
    skip_done: incremental mode; shard numbers that are done are passed over, and inputs
        already recorded in done shards are ignored by `add` (it returns False).
    fsync: flush each file to disk before renaming it in, so a power cut cannot leave a
        final name over missing data.
    lock_token: the token of the lock this job's driver holds on the set (`ShardSet.lock_token`),
        for a writer in another process of the job; see the module doc.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        prefix: str = "shard",
        first_shard: int = 0,
        shard_stride: int = 1,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_inputs: int | None = None,
        skip_done: bool = False,
        fsync: bool = True,
        lock_token: str | None = None,
    ) -> None:
        if first_shard < 0 or shard_stride < 1:
            raise ValueError(f"first_shard must be >= 0 and shard_stride >= 1, got {first_shard}, {shard_stride}")
        if max_samples < 1 or max_bytes < 1:
            raise ValueError(f"max_samples and max_bytes must be >= 1, got {max_samples}, {max_bytes}")
        self.layout = SetLayout(Path(root), prefix)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._check_lock(lock_token)
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.max_inputs = max_inputs if max_inputs is not None else 10 * max_samples
        self.fsync = fsync
        self.skip_done = skip_done
        self._pid = os.getpid()
        self._next_number = first_shard
        self._stride = shard_stride
        done = self.layout.done_numbers()
        # Keys already in the set, so a duplicate is refused here rather than found by validate.
        self._keys_seen: dict[str, str] = {
            key: self.layout.shard_name(n) for n in done for key in self.layout.read_stats(n)["samples"]["key"]
        }
        self._done_numbers = set(done) if skip_done else set()
        self._done_inputs: set[str] = set()
        if skip_done:
            table = read_status_tables([self.layout.status_path(n) for n in done], columns=["input_key"])
            self._done_inputs = set(table.column("input_key").to_pylist())
        self._shard: _OpenShard | None = None
        self.written: list[dict[str, Any]] = []  # stats of the shards this writer committed

    def _check_lock(self, token: str | None) -> WriterLock | None:
        """The lock this writer took for itself, or None when its job holds the set's lock."""
        root = self.layout.root
        if token is not None:
            check_token(root, token)
            return None
        holder = read_holder(root)
        if holder is not None and holder.held:
            if holder.is_this_process():
                return None
            raise WriterLockedError(refusal(root, holder))
        return WriterLock(root, "shard-writer").acquire()

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # -- adding -------------------------------------------------------------------------------

    def add(self, status: InputStatus, triples: Sequence[Triple] = ()) -> bool:
        """Record one input and its triples. Returns False when skip_done found it already done."""
        return self.add_encoded(status, [EncodedSample.from_triple(t) for t in triples])

    def add_encoded(self, status: InputStatus, samples: Sequence[EncodedSample]) -> bool:
        """`add` for samples already encoded (e.g. copied from another set without decoding)."""
        if status.status == "ok" and not samples:
            raise ValueError(f"input {status.input_key!r}: status ok needs at least one sample; skip it with a reason")
        if status.status != "ok" and samples:
            raise ValueError(f"input {status.input_key!r}: status {status.status!r} cannot carry samples")
        if self.skip_done and status.input_key in self._done_inputs:
            return False
        keys = [s.key for s in samples]
        for key in keys:
            if key in self._keys_seen or keys.count(key) > 1:
                where = self._keys_seen.get(key, "this input")
                raise ValueError(f"duplicate key {key!r} (input {status.input_key!r}); already in {where}")
        num_bytes = sum(s.num_bytes for s in samples)
        shard = self._shard_for(len(samples), num_bytes)
        for sample in samples:
            for suffix in MEMBERS:
                shard.tar.add(f"{sample.key}.{suffix}", sample.members[suffix])
            self._keys_seen[sample.key] = self.layout.shard_name(shard.number)
        shard.samples.extend(samples)
        shard.payload_bytes += num_bytes
        shard.rows.append((status, keys))
        return True

    def _shard_for(self, num_samples: int, num_bytes: int) -> _OpenShard:
        shard = self._shard
        if shard is not None and (
            len(shard.rows) >= self.max_inputs
            or (
                shard.num_samples > 0
                and (
                    shard.num_samples + num_samples > self.max_samples
                    or shard.payload_bytes + num_bytes > self.max_bytes
                )
            )
        ):
            self._commit()
            shard = None
        if shard is None:
            shard = self._shard = self._open_next()
        return shard

    def _open_next(self) -> _OpenShard:
        number = self._next_number
        while number in self._done_numbers:
            number += self._stride
        self._next_number = number + self._stride
        # Whatever is under this number now is replaced: unfinished leftovers of a crashed run,
        # or a done shard this writer was told to rewrite (skip_done=False).
        name = self.layout.shard_name(number)
        if self.layout.stats_path(number).exists():
            self._keys_seen = {k: v for k, v in self._keys_seen.items() if v != name}
        for path in self.layout.shard_paths(number):
            path.unlink(missing_ok=True)
        return _OpenShard(self.layout, number, self._pid)

    # -- committing ---------------------------------------------------------------------------

    def _finish_file(self, file) -> None:
        file.flush()
        if self.fsync:
            os.fsync(file.fileno())
        file.close()

    def _write_status(self, shard: _OpenShard) -> None:
        final = self.layout.status_path(shard.number)
        temp = self.layout.temp_path(final, self._pid)
        write_status_table(temp, shard.rows)
        if self.fsync:
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
        temp.replace(final)

    def _commit(self) -> None:
        shard, self._shard = self._shard, None
        md5 = shard.tar.finish()
        self._finish_file(shard.file)
        shard.temp_tar.replace(shard.final_tar)
        self._write_status(shard)
        statuses = Counter(s.status for s, _ in shard.rows)
        stats = {
            "shard": self.layout.shard_name(shard.number),
            "url": shard.final_tar.name,
            "nsamples": shard.num_samples,
            "filesize": shard.tar.num_bytes,
            "md5": md5,
            "num_inputs": len(shard.rows),
            "status": {s: statuses.get(s, 0) for s in ("ok", "skipped", "failed")},
            "reasons": _reasons_by_status(shard.rows),
            "samples": _sample_columns(shard.samples),
            "write_s": round(time.monotonic() - shard.started, 6),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": self._pid,
        }
        stats_path = self.layout.stats_path(shard.number)
        atomic_write(stats_path, json.dumps(stats).encode(), self.layout.temp_path(stats_path, self._pid), self.fsync)
        self.written.append(stats)

    def _abandon(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.tar.close()
            shard.file.close()
            shard.temp_tar.unlink(missing_ok=True)

    def key_shard(self, key: str) -> str | None:
        """The shard already holding `key` (written by this writer or done before it), else None."""
        return self._keys_seen.get(key)

    def flush(self) -> None:
        """Commit the shard being filled now; the next input opens this writer's next shard.

        Callers that map input partitions to shards call it at each partition's end.
        """
        if self._shard is not None:
            self._commit()

    def close(self) -> list[dict[str, Any]]:
        """Commit the shard being filled; returns the stats of every shard this writer wrote."""
        try:
            self.flush()
        finally:
            self._release_lock()
        return self.written

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # An error mid-input may leave the caller's state unknown: drop the open shard
            # rather than commit it; an incremental rerun redoes exactly those inputs.
            try:
                self._abandon()
            finally:
                self._release_lock()
