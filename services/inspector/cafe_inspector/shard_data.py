"""What the browser keeps in memory about one shard, each part loaded the first time it is needed.

- `ShardColumns`: its stats.json (keys, rounds, subjects, scores, per-status reason counts),
  enough to page and filter without opening the tar.
- `ShardMembers`: where each member of each sample lies in the tar, from its headers only
  (`cafe_core.tario.iter_tar_entries` seeks past the data), read as far as needed; a member
  is then one `pread`.
- `ShardInputs`: the rows of its status parquet (one per input), and which input each sample
  key came from.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cafe_core.reader import split_member_name
from cafe_core.tario import BLOCK, TarCorruptError, iter_tar_entries
from cafe_inspector.errors import NotFound, Unreadable


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _float_column(values: list[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class ShardColumns:
    name: str
    keys: list[str]
    rounds: np.ndarray  # int64, one per sample
    subjects: list[str]
    subjects_lower: list[str]
    scores: dict[str, np.ndarray]  # name -> float64 per sample, NaN where missing
    quality: dict[str, np.ndarray]
    round_set: frozenset[int]
    sample_reasons: dict[str, int]  # reason -> count among `ok` inputs (the ones with samples)
    num_inputs: int
    status_counts: dict[str, int]  # ok / skipped / failed
    reason_counts: dict[str, dict[str, int]]  # status -> reason -> inputs

    @classmethod
    def from_stats(cls, stats: dict[str, Any], path: Path) -> ShardColumns:
        try:
            samples = stats["samples"]
            keys = list(samples["key"])
            rounds = np.asarray(samples["round"], dtype=np.int64)
            subjects = [str(s) for s in samples["subject"]]
            scores = {n: _float_column(v) for n, v in samples["scores"].items()}
            quality = {n: _float_column(v) for n, v in samples.get("quality", {}).items()}
            reasons = stats.get("reasons", {})
            columns = cls(
                name=str(stats["shard"]),
                keys=keys,
                rounds=rounds,
                subjects=subjects,
                subjects_lower=[s.lower() for s in subjects],
                scores=scores,
                quality=quality,
                round_set=frozenset(int(r) for r in rounds),
                sample_reasons=dict(reasons.get("ok", {})),
                num_inputs=int(stats["num_inputs"]),
                status_counts={s: int(stats["status"].get(s, 0)) for s in ("ok", "skipped", "failed")},
                reason_counts={s: dict(c) for s, c in reasons.items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise Unreadable(
                f"{path.name}: not a shard stats file this version reads ({type(exc).__name__}: {exc}); "
                f"`cafe shards validate {path.parent}` checks the set"
            ) from exc
        lengths = {len(rounds), len(subjects), *(len(v) for v in scores.values()), *(len(v) for v in quality.values())}
        if lengths - {len(keys)}:
            raise Unreadable(f"{path.name}: its per-sample columns differ in length; the file is damaged")
        return columns

    def sample(self, position: int) -> dict[str, Any]:
        """Key, round, subject and scores of the sample at `position` in this shard (JSON-ready)."""

        def pick(columns: dict[str, np.ndarray]) -> dict[str, float]:
            return {n: float(v[position]) for n, v in columns.items() if not np.isnan(v[position])}

        return {
            "key": self.keys[position],
            "shard": self.name,
            "round": int(self.rounds[position]),
            "subject": self.subjects[position],
            "scores": pick(self.scores),
            "quality": pick(self.quality),
        }


def load_columns(stats_path: Path) -> ShardColumns:
    try:
        stats = json.loads(stats_path.read_bytes())
    except FileNotFoundError:
        raise NotFound(
            f"{stats_path.name}: missing; the shard is not done (`cafe shards ls` shows its state)"
        ) from None
    except (OSError, ValueError) as exc:
        raise Unreadable(f"{stats_path.name}: does not read as JSON ({exc}); `cafe shards validate` checks it") from exc
    return ShardColumns.from_stats(stats, stats_path)


class ShardMembers:
    """key -> suffix -> (offset, size) in one tar, learnt from its headers as far as asked.

    The headers are read lazily and only as far as needed: asking for a key reads on from
    where the last read stopped until that key's sample is complete, so the first page of a
    1000-sample shard reads a few dozen headers, not 5000. What was read stays known (the
    object lives in the set's cache), and the scan never reads member data. `problem` says
    where a damaged tar breaks; the samples before the break still show.
    """

    def __init__(self, tar: Path) -> None:
        if not tar.is_file():
            raise NotFound(f"{tar.name}: missing although the index lists it; `cafe shards validate` checks the set")
        self.tar = tar
        self.problem: str | None = None
        self.complete = False
        self._members: dict[str, dict[str, tuple[int, int]]] = {}
        self._resume = 0  # where the next header scan starts: just past the data of the last member read
        self._last_key: str | None = None  # key of the last member read (None inside a skipped later copy)
        self._lock = threading.Lock()

    def _scan_to(self, key: str) -> None:
        """Read headers until `key`'s sample is complete (or the tar ends). Every key recorded
        before a scan stops is complete: a scan stops only at the first member of a later key."""
        with self._lock:
            if self.complete or key in self._members:
                return
            base = end_of_last = self._resume
            with open(self.tar, "rb") as f:
                f.seek(base)
                try:
                    for name, offset, size in iter_tar_entries(f):
                        member_key, suffix = split_member_name(name)
                        if member_key != self._last_key or suffix in self._members.get(member_key, {}):
                            if key in self._members:
                                # The wanted sample is whole. Resume just past the last member read, so
                                # a long-name header in front of this member is read again with it.
                                self._resume = end_of_last
                                return
                            if member_key in self._members:
                                # A later copy of a key already seen (its members pass through here one
                                # by one, since _last_key stays None): the first copy wins, as in TripleReader.
                                self._last_key = None
                                end_of_last = base + offset + _padded(size)
                                continue
                        self._members.setdefault(member_key, {})[suffix] = (base + offset, size)
                        self._last_key = member_key
                        end_of_last = base + offset + _padded(size)
                except TarCorruptError as exc:
                    self.problem = str(exc)
            self.complete = True

    @property
    def num_samples_read(self) -> int:
        """Samples whose member offsets are known so far."""
        return len(self._members)

    def locate(self, key: str, suffix: str) -> tuple[int, int]:
        self._scan_to(key)
        sample = self._members.get(key)
        if sample is None or suffix not in sample:
            detail = f" (the tar breaks: {self.problem})" if self.problem else ""
            raise Unreadable(f"{self.tar.name}: no member {key}.{suffix}{detail}; `cafe shards validate` checks it")
        return sample[suffix]

    def read(self, key: str, suffix: str) -> bytes:
        offset, size = self.locate(key, suffix)
        fd = os.open(self.tar, os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise Unreadable(f"{self.tar.name}: member {key}.{suffix} is cut short; the file changed or is damaged")
        return data


@dataclass(frozen=True)
class ShardInputs:
    """The shard's status rows (JSON-ready dicts) and key -> row number of the input it came from."""

    rows: list[dict[str, Any]]
    row_of_key: dict[str, int]

    def reason_of(self) -> dict[str, str]:
        return {key: self.rows[i]["reason"] for key, i in self.row_of_key.items()}


def load_inputs(status_path: Path, shard: str) -> ShardInputs:
    try:
        table = pq.read_table(status_path)
    except FileNotFoundError:
        raise NotFound(f"{status_path.name}: missing; the shard's status table was not written") from None
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise Unreadable(f"{status_path.name}: does not read as parquet ({exc}); `cafe shards validate`") from exc
    rows = []
    row_of_key: dict[str, int] = {}
    for i, row in enumerate(table.to_pylist()):
        timings = row.get("timings_s") or []
        rows.append(
            {
                "shard": shard,
                "input_key": row.get("input_key", ""),
                "source_uri": row.get("source_uri", ""),
                "status": row.get("status", ""),
                "reason": row.get("reason", ""),
                "error": row.get("error", ""),
                "sample_keys": list(row.get("sample_keys") or []),
                "timings_s": dict(timings),  # pyarrow gives a map column as (name, value) pairs
            }
        )
        for key in rows[-1]["sample_keys"]:
            row_of_key.setdefault(key, i)
    return ShardInputs(rows, row_of_key)
