"""One shard set as the browser sees it: pages of samples, filters, one sample, input rows, flags.

Paging goes through the index: `shardindex.json` gives each shard's sample count, so the
shard holding position N is a bisection over the running totals, and only that shard's
stats.json is read to learn its keys. A filtered page reads stats.json files from the first
shard on until it holds one match past the page (so it knows a next page exists) and stops;
counting every match is a separate request (`count`), so a page never waits for a count. No
tar is read to page, filter or count; a page's prompts and thumbnails are single reads at
member offsets. Everything read is cached per shard, in bounded caches.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cafe_core.flags import Flag, add_flag, check_reason, flags_path, read_flags, remove_flag
from cafe_core.index import read_index
from cafe_core.keys import KEY_PATTERN
from cafe_core.layout import SetLayout, detect_layout
from cafe_core.stats import set_stats, shard_set_stats
from cafe_core.status import REASON_PATTERN, STATUSES
from cafe_core.triple import MEMBERS, METADATA, PROMPT
from cafe_inspector.errors import BadRequest, NotFound, Unreadable, Unwritable
from cafe_inspector.filters import SampleFilter
from cafe_inspector.lru import LRU
from cafe_inspector.paths import inside
from cafe_inspector.shard_data import (
    ShardColumns,
    ShardInputs,
    ShardMembers,
    load_columns,
    load_inputs,
)

COUNT_BUDGET_S = 5.0  # a count reads stats.json files this long at most, then answers with a lower bound
MAX_CACHED_SHARDS = 4096  # stats.json columns: ~100 KB per 1000-sample shard
MAX_CACHED_TARS = 256  # member offsets: ~0.5 MB per 1000-sample shard


@dataclass(frozen=True)
class ShardRef:
    number: int
    name: str
    nsamples: int
    start: int  # the set-wide position of its first sample


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    offset: int
    limit: int
    total: int | None  # None: not counted (ask `count`); the page stopped once it knew of a next page
    counted: int  # matches seen so far (a lower bound of the total)
    next_offset: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "offset": self.offset,
            "limit": self.limit,
            "total": self.total,
            "counted": self.counted,
            "next_offset": self.next_offset,
        }


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise BadRequest(f"key: {key[:40]!r} is not 16 lowercase hex characters")
    return key


class SampleSet:
    """One set under the served folder `root` (resolved): `folder` is its resolved path, `set_id`
    the name the API uses. Opening it reads the index only (stats.json files for an open set)."""

    def __init__(self, root: Path, folder: Path, set_id: str) -> None:
        self.root = root
        self.folder = folder
        self.set_id = set_id
        try:
            self.layout: SetLayout = detect_layout(folder)
        except (FileNotFoundError, ValueError) as exc:
            raise Unreadable(f"set {set_id!r}: {exc}") from exc
        self.has_index = self.layout.index_path.is_file()
        self._columns: LRU[int, ShardColumns] = LRU(MAX_CACHED_SHARDS)
        self._members: LRU[int, ShardMembers] = LRU(MAX_CACHED_TARS)
        self._inputs: LRU[int, ShardInputs] = LRU(MAX_CACHED_TARS)
        self._key_shard: dict[str, int] = {}  # filled as stats.json files are read
        self._mapped: set[int] = set()
        self._lock = threading.Lock()
        self._flags_stamp: tuple[int, int, int] | None = None
        self._flags: dict[str, Flag] = {}
        self.shards = self._shard_refs()
        self._starts = [s.start for s in self.shards]
        self.num_samples = sum(s.nsamples for s in self.shards)

    # -- the shards, their files and caches ------------------------------------------------------

    def _shard_refs(self) -> list[ShardRef]:
        if not self.has_index:
            # An open set (no index yet): its done shards, counted from their stats.json.
            counts = [(n, len(self.columns(n).keys)) for n in self.layout.done_numbers()]
        else:
            inside(self.root, self.layout.index_path)
            try:
                entries = read_index(self.layout)["shardlist"]
            except ValueError as exc:
                raise Unreadable(str(exc)) from exc
            pattern = re.compile(rf"{re.escape(self.layout.prefix)}-(\d{{6,}})\.tar")
            counts = []
            for entry in entries:
                url = entry.get("url") if isinstance(entry, dict) else None
                match = pattern.fullmatch(url) if isinstance(url, str) else None
                if match is None or not isinstance(entry.get("nsamples"), int) or entry["nsamples"] < 0:
                    raise Unreadable(
                        f"{self.layout.index_path.name}: entry {entry!r} is not a shard of this set; "
                        f"rebuild the index with `cafe shards index {self.folder}`"
                    )
                counts.append((int(match[1]), entry["nsamples"]))
        refs, start = [], 0
        for number, nsamples in counts:
            refs.append(ShardRef(number, self.layout.shard_name(number), nsamples, start))
            start += nsamples
        return refs

    def columns(self, number: int) -> ShardColumns:
        columns = self._columns.get(number)
        if columns is None:
            columns = load_columns(inside(self.root, self.layout.stats_path(number)))
            self._columns.put(number, columns)
            if number not in self._mapped:
                with self._lock:
                    for key in columns.keys:
                        self._key_shard.setdefault(key, number)
                    self._mapped.add(number)
        return columns

    def members(self, number: int) -> ShardMembers:
        return self._members.get_or_load(number, lambda: ShardMembers(inside(self.root, self.layout.tar_path(number))))

    def inputs(self, number: int) -> ShardInputs:
        return self._inputs.get_or_load(
            number,
            lambda: load_inputs(inside(self.root, self.layout.status_path(number)), self.layout.shard_name(number)),
        )

    def locate(self, key: str) -> int:
        """The shard number holding `key`, reading stats.json files until it is found."""
        check_key(key)
        number = self._key_shard.get(key)
        if number is not None:
            return number
        for ref in self.shards:
            if ref.number not in self._mapped:
                self.columns(ref.number)
                if key in self._key_shard:
                    return self._key_shard[key]
        raise NotFound(f"key: {key!r} is not in set {self.set_id!r}")

    # -- flags -----------------------------------------------------------------------------------

    def flags(self) -> dict[str, Flag]:
        """key -> Flag, re-read whenever the file changes (another process may flag too)."""
        path = flags_path(self.folder)
        try:
            inside(self.root, path)
            stat = path.stat()
        except FileNotFoundError:
            self._flags_stamp, self._flags = None, {}
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._flags_stamp:
            try:
                flags = {f.key: f for f in read_flags(self.folder)}
            except ValueError as exc:
                raise Unreadable(str(exc)) from exc
            self._flags_stamp, self._flags = stamp, flags
        return self._flags

    def flag(self, key: str, reason: str) -> Flag:
        self.locate(key)  # only keys of this set
        try:
            reason = check_reason(reason)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        path = flags_path(self.folder)
        if path.is_symlink() or path.exists():
            inside(self.root, path)  # a flags file linked out of DIR is neither read nor replaced
        try:
            return add_flag(self.folder, key, reason)
        except OSError as exc:
            raise Unwritable(
                f"cannot write {flags_path(self.folder)}: {exc.strerror or exc}; "
                "the browser needs write access to the set's folder to store flags (shards stay untouched)"
            ) from exc

    def unflag(self, key: str) -> bool:
        check_key(key)
        try:
            return remove_flag(self.folder, key)
        except OSError as exc:
            raise Unwritable(f"cannot write {flags_path(self.folder)}: {exc.strerror or exc}") from exc

    @staticmethod
    def flag_json(flag: Flag | None) -> dict[str, Any] | None:
        if flag is None:
            return None
        return {"key": flag.key, "reason": flag.reason, "flagged_at": flag.flagged_at.isoformat()}

    # -- pages of samples ------------------------------------------------------------------------

    def page(self, sample_filter: SampleFilter, offset: int, limit: int) -> Page:
        flags = self.flags()
        if sample_filter.active:
            picks, total, counted = self._filtered(sample_filter, offset, limit, flags)
        else:
            picks, total, counted = self._plain(offset, limit), self.num_samples, self.num_samples
        items = [self._card(ref, position, flags) for ref, position in picks]
        end = offset + len(items)
        more = total is None or end < total
        return Page(items, offset, limit, total, counted, end if more else None)

    def _plain(self, offset: int, limit: int) -> list[tuple[ShardRef, int]]:
        picks: list[tuple[ShardRef, int]] = []
        i = bisect.bisect_right(self._starts, offset) - 1
        position = offset
        while i >= 0 and i < len(self.shards) and len(picks) < limit:
            ref = self.shards[i]
            keys = self.columns(ref.number).keys
            # stats.json's key list is the truth if a stale index counts differently
            local = position - ref.start
            stop = min(len(keys), local + limit - len(picks))
            picks += [(ref, j) for j in range(local, stop)]
            i += 1
            if i < len(self.shards):
                position = self.shards[i].start
        return picks

    def _matches(self, sample_filter: SampleFilter, flags: dict[str, Flag]) -> Iterator[tuple[ShardRef, np.ndarray]]:
        """(shard, positions of its matching samples) for each shard with a match, in set order."""
        for ref in self.shards:
            columns = self.columns(ref.number)
            if not sample_filter.may_match(columns):
                continue
            reasons = self.inputs(ref.number).reason_of() if sample_filter.reason else None
            hits = np.flatnonzero(sample_filter.mask(columns, flags, reasons))
            if len(hits):
                yield ref, hits

    def _filtered(
        self, sample_filter: SampleFilter, offset: int, limit: int, flags: dict[str, Flag]
    ) -> tuple[list[tuple[ShardRef, int]], int | None, int]:
        picks: list[tuple[ShardRef, int]] = []
        matched = 0
        for ref, hits in self._matches(sample_filter, flags):
            if matched + len(hits) > offset:
                first = max(0, offset - matched)
                picks += [(ref, int(j)) for j in hits[first : first + limit + 1 - len(picks)]]
            matched += len(hits)
            if len(picks) > limit:  # one match past the page: a next page exists, stop reading
                return picks[:limit], None, matched
        return picks, matched, matched

    def count(self, sample_filter: SampleFilter, budget_s: float = COUNT_BUDGET_S) -> dict[str, int | None]:
        """Matches of the filter over the whole set, from stats.json files only (within `budget_s`)."""
        if not sample_filter.active:
            return {"total": self.num_samples, "counted": self.num_samples}
        deadline = time.monotonic() + budget_s
        flags = self.flags()
        matched = 0
        for _, hits in self._matches(sample_filter, flags):
            matched += len(hits)
            if time.monotonic() > deadline:
                return {"total": None, "counted": matched}
        return {"total": matched, "counted": matched}

    def _card(self, ref: ShardRef, position: int, flags: dict[str, Flag]) -> dict[str, Any]:
        card = self.columns(ref.number).sample(position)
        card["position"] = ref.start + position
        card["flag"] = self.flag_json(flags.get(card["key"]))
        try:
            card["prompt"] = self.members(ref.number).read(card["key"], PROMPT).decode("utf-8", errors="replace")
        except (Unreadable, NotFound) as exc:
            card["prompt"], card["problem"] = None, str(exc)  # one broken sample does not break the page
        return card

    # -- one sample ------------------------------------------------------------------------------

    def detail(self, key: str) -> dict[str, Any]:
        number = self.locate(key)
        columns = self.columns(number)
        members = self.members(number)
        card = columns.sample(columns.keys.index(key))
        try:
            metadata = json.loads(members.read(key, METADATA))
        except ValueError as exc:
            raise Unreadable(f"{key}.json in {columns.name}: not JSON ({exc}); `cafe shards validate`") from exc
        inputs = self.inputs(number)
        row = inputs.row_of_key.get(key)
        return {
            **card,
            "prompt": members.read(key, PROMPT).decode("utf-8", errors="replace"),
            "metadata": metadata,
            "members": {suffix: members.locate(key, suffix)[1] for suffix in MEMBERS},
            "input": inputs.rows[row] if row is not None else None,
            "flag": self.flag_json(self.flags().get(key)),
        }

    # -- per-input status rows -------------------------------------------------------------------

    def _input_counts(self, status: str, reason: str) -> Iterator[tuple[ShardRef, int]]:
        if status and status not in STATUSES:
            raise BadRequest(f"status: {status!r} is not one of {', '.join(STATUSES)}")
        if reason and not REASON_PATTERN.match(reason):
            raise BadRequest(f"reason: {reason!r} is not a dotted lowercase code like 'gate.mask_area'")
        for ref in self.shards:
            # stats.json counts inputs per status and reason: shards without a match are skipped unread
            yield ref, _count_inputs(self.columns(ref.number), status, reason)

    def input_rows(self, status: str, reason: str, offset: int, limit: int) -> Page:
        rows: list[dict[str, Any]] = []
        matched = 0
        for ref, count in self._input_counts(status, reason):
            if count and matched + count > offset:
                wanted = [
                    r
                    for r in self.inputs(ref.number).rows
                    if (not status or r["status"] == status) and (not reason or r["reason"] == reason)
                ]
                first = max(0, offset - matched)
                rows += wanted[first : first + limit + 1 - len(rows)]
            matched += count
            if len(rows) > limit:  # one row past the page: a next page exists, stop reading
                return Page(rows[:limit], offset, limit, None, matched, offset + limit)
        end = offset + len(rows)
        return Page(rows, offset, limit, matched, matched, end if end < matched else None)

    def count_inputs(self, status: str, reason: str, budget_s: float = COUNT_BUDGET_S) -> dict[str, int | None]:
        deadline = time.monotonic() + budget_s
        matched = 0
        for _, count in self._input_counts(status, reason):
            matched += count
            if time.monotonic() > deadline:
                return {"total": None, "counted": matched}
        return {"total": matched, "counted": matched}

    # -- whole-set figures -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts from dataset.json when the set is closed (one small file), else from stats.json."""
        dataset_path = self.layout.dataset_path
        counts: dict[str, Any] | None = None
        if dataset_path.is_file():
            try:
                dataset = json.loads(inside(self.root, dataset_path).read_bytes())
                fields = ("num_shards", "num_samples", "num_inputs", "num_bytes", "status", "reasons", "rounds")
                counts = {f: dataset[f] for f in fields}
            except (OSError, ValueError, KeyError):
                counts = None  # a damaged dataset.json: fall back to the stats files
        if counts is None:
            counts = set_stats(self.layout, distributions=False, honour_flags=False)
        first = self.columns(self.shards[0].number) if self.shards else None
        if not self.has_index:
            index = "missing: the set is open; pages come from the done shards' stats.json"
        elif counts["num_samples"] != self.num_samples or counts["num_shards"] != len(self.shards):
            index = f"stale: lists {self.num_samples} samples; run `cafe shards index {self.folder}`"
        else:
            index = "ok"
        return {
            "set": self.set_id,
            "prefix": self.layout.prefix,
            "closed": dataset_path.is_file(),
            "index": index,
            **{k: counts[k] for k in ("num_shards", "num_inputs", "num_bytes", "status", "reasons", "rounds")},
            "num_samples": self.num_samples,
            "num_flagged": len(self.flags()),
            "score_names": sorted(first.scores) if first else [],
            "quality_names": sorted(first.quality) if first else [],
        }

    def stats(self) -> dict[str, Any]:
        """`cafe shards stats` of the set: flags honoured, stats.json files only."""
        for number in self.layout.done_numbers():
            inside(self.root, self.layout.stats_path(number))
        self.flags()  # checks the flags file stays inside DIR too
        return shard_set_stats(self.folder)


def _count_inputs(columns: ShardColumns, status: str, reason: str) -> int:
    if not reason:
        return columns.status_counts.get(status, 0) if status else columns.num_inputs
    statuses = [status] if status else list(columns.reason_counts)
    return sum(columns.reason_counts.get(s, {}).get(reason, 0) for s in statuses)
