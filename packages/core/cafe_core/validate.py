"""Checking a shard set against the data contract.

Full mode reads every byte: tars parse, every key has its five members and nothing else, the
json meets the schema, images decode in their contract modes, mask and target sizes agree,
keys are unique across the set, status tables agree with the samples, and the index agrees
with the files. Fast mode trusts the index and checks only each file's size and md5.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from cafe_core.index import read_index
from cafe_core.layout import FLAGS_LOCK_NAME, SetLayout, detect_layout
from cafe_core.lock import read_holder
from cafe_core.reader import group_samples
from cafe_core.status import read_status_tables
from cafe_core.tario import HashingReader, TarCorruptError, iter_tar_members
from cafe_core.triple import MASK, MEMBERS, METADATA, PROMPT, REFERENCE, TARGET, triple_problems


@dataclass(frozen=True)
class Problem:
    code: str  # e.g. tar.corrupt, sample.incomplete, json.schema, key.duplicate, index.md5
    shard: str
    message: str
    key: str = ""

    def __str__(self) -> str:
        where = f"{self.shard}:{self.key}" if self.key else self.shard
        return f"[{self.code}] {where}: {self.message}"


@dataclass
class ValidationReport:
    root: Path
    fast: bool
    num_shards: int = 0
    num_samples: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def codes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.code] = counts.get(p.code, 0) + 1
        return dict(sorted(counts.items()))


@dataclass
class _ShardResult:
    name: str
    keys: list[str]
    md5: str
    problems: list[Problem]


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _check_sample(shard: str, key: str, members: dict[str, bytes]) -> Iterator[Problem]:
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        yield Problem("sample.incomplete", shard, f"missing member(s) {', '.join(missing)}", key)
        return
    extra = sorted(set(members) - set(MEMBERS))
    if extra:
        yield Problem("sample.extra_member", shard, f"members outside the contract: {', '.join(extra)}", key)
    try:
        metadata = json.loads(members[METADATA])
    except (ValueError, UnicodeDecodeError) as exc:
        yield Problem("json.invalid", shard, f"KEY.json does not parse: {exc}", key)
        return
    images = {}
    for suffix in (TARGET, REFERENCE, MASK):
        try:
            images[suffix] = _open_image(members[suffix])
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            yield Problem("image.decode", shard, f"{suffix} does not decode: {exc}", key)
    if len(images) < 3:
        return
    try:
        prompt = members[PROMPT].decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Problem("prompt.encoding", shard, f"prompt.txt is not UTF-8: {exc}", key)
        return
    for message in triple_problems(key, images[TARGET], images[REFERENCE], images[MASK], prompt, metadata):
        code = "json.schema" if message.startswith("metadata.") else "sample.contract"
        yield Problem(code, shard, message, key)


def _check_shard(tar_path: Path, status_path: Path) -> _ShardResult:
    """Full check of one shard; runs in a worker process, so it takes and returns plain data."""
    name = tar_path.name.removesuffix(".tar")
    problems: list[Problem] = []
    keys: list[str] = []
    md5 = ""
    try:
        with open(tar_path, "rb") as f:
            stream = HashingReader(f)
            try:
                for key, members in group_samples(iter_tar_members(stream)):
                    keys.append(key)
                    problems.extend(_check_sample(name, key, members))
                md5 = stream.drain()
            except TarCorruptError as exc:
                problems.append(Problem("tar.corrupt", name, f"{exc} (after {len(keys)} samples)"))
    except OSError as exc:
        problems.append(Problem("tar.unreadable", name, str(exc)))
        return _ShardResult(name, keys, md5, problems)
    problems.extend(_check_status(name, status_path, keys))
    return _ShardResult(name, keys, md5, problems)


def _check_status(name: str, status_path: Path, keys: list[str]) -> list[Problem]:
    if not status_path.is_file():
        return [Problem("status.missing", name, f"{status_path.name} is missing")]
    try:
        table = read_status_tables([status_path], columns=["sample_keys"])
    except Exception as exc:  # any parquet failure is the same problem to the user
        return [Problem("status.unreadable", name, f"{status_path.name}: {exc}")]
    recorded = {k for row in table.column("sample_keys").to_pylist() for k in row}
    problems = []
    unrecorded = sorted(set(keys) - recorded)
    if unrecorded:
        message = f"{len(unrecorded)} sample(s) with no input row, e.g. {unrecorded[0]}"
        problems.append(Problem("status.mismatch", name, message))
    missing = sorted(recorded - set(keys))
    if missing:
        message = f"{len(missing)} recorded sample(s) not in the tar, e.g. {missing[0]}"
        problems.append(Problem("status.mismatch", name, message))
    return problems


def _set_level_problems(layout: SetLayout) -> tuple[list[Problem], dict[str, dict[str, Any]]]:
    """Problems of the folder as a whole, and the index entries by url (empty if no index)."""
    problems = []
    writer = read_holder(layout.root)
    if writer is not None and writer.held:
        # Its temporaries and unfinished shards are work in progress, not leftovers.
        message = f"being written now by {writer.describe()}; validate it when that job is done"
        problems.append(Problem("set.writing", layout.root.name, message))
    else:
        for path in layout.temp_files():
            message = f"temporary file left by an interrupted writer: {path} (the set's next writer removes it)"
            problems.append(Problem("set.temporary", path.name, message))
    flagger = read_holder(layout.root, FLAGS_LOCK_NAME)
    if flagger is None or not flagger.held:
        for path, _ in layout.flags_temp_files():
            message = f"temporary flags file left by an interrupted flag write: {path} (the next flag write removes it)"
            problems.append(Problem("set.temporary", path.name, message))
    for path in layout.stray_temp_files():
        message = f"temporary file left by an interrupted writer: {path} (the set's next writer removes it)"
        problems.append(Problem("set.temporary", path.name, message))
    done = set(layout.done_numbers())
    for number in sorted(set(layout.existing_numbers()) - done):
        message = "no stats.json: its writer did not finish"
        problems.append(Problem("shard.unfinished", layout.shard_name(number), message))
    for number in sorted(done):
        if not layout.tar_path(number).is_file():
            problems.append(Problem("shard.missing", layout.shard_name(number), "stats.json without its tar"))
    if not layout.dataset_path.is_file():
        problems.append(Problem("set.open", layout.root.name, "no dataset.json: the set was never closed"))
    try:
        entries = {e["url"]: e for e in read_index(layout)["shardlist"]}
    except (FileNotFoundError, ValueError) as exc:
        problems.append(Problem("index.missing", layout.index_path.name, str(exc)))
        return problems, {}
    on_disk = {layout.tar_path(n).name for n in done if layout.tar_path(n).is_file()}
    for url in sorted(on_disk - set(entries)):
        problems.append(Problem("index.stale", url, "shard on disk is not in shardindex.json"))
    for url in sorted(set(entries) - on_disk):
        problems.append(Problem("index.stale", url, "shardindex.json lists a shard that is not on disk"))
    return problems, entries


def _compare_entry(name: str, entry: dict[str, Any], filesize: int, md5: str, nsamples: int | None) -> list[Problem]:
    problems = []
    if entry.get("filesize") != filesize:
        message = f"index says {entry.get('filesize')} bytes, file has {filesize}"
        problems.append(Problem("index.filesize", name, message))
    if md5 and entry.get("md5") != md5:
        problems.append(Problem("index.md5", name, f"index md5 {entry.get('md5')} differs from the file's {md5}"))
    if nsamples is not None and entry.get("nsamples") != nsamples:
        message = f"index says {entry.get('nsamples')} samples, tar has {nsamples}"
        problems.append(Problem("index.nsamples", name, message))
    return problems


def _file_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return HashingReader(f).drain()


def validate_set(
    root: str | Path,
    *,
    fast: bool = False,
    workers: int = 1,
    on_shard: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Check the set in `root`; `workers` > 1 checks shards in that many processes."""
    layout = detect_layout(Path(root))
    report = ValidationReport(layout.root, fast)
    problems, entries = _set_level_problems(layout)
    report.problems.extend(problems)
    numbers = [n for n in layout.done_numbers() if layout.tar_path(n).is_file()]
    report.num_shards = len(numbers)

    if fast:
        # The full check reads each status table; fast mode still needs it there (a shard is its tar,
        # status table and stats, and training refuses a set that lacks one).
        for number in numbers:
            if not layout.status_path(number).is_file():
                name = layout.tar_path(number).name
                report.problems.append(Problem("status.missing", name, f"{layout.status_path(number).name} is missing"))
        for url, entry in entries.items():
            path = layout.root / url
            if path.is_file():
                report.problems.extend(_compare_entry(url, entry, path.stat().st_size, _file_md5(path), None))
            report.num_samples += int(entry.get("nsamples", 0))
            if on_shard:
                on_shard(url)
        return report

    jobs = [(layout.tar_path(n), layout.status_path(n)) for n in numbers]
    workers = max(1, min(workers, len(jobs), os.cpu_count() or 1))
    if workers == 1:
        results = (_check_shard(*job) for job in jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_check_shard, *zip(*jobs, strict=True))
    seen: dict[str, str] = {}
    for (tar_path, _), result in zip(jobs, results, strict=True):
        report.num_samples += len(result.keys)
        report.problems.extend(result.problems)
        for key in result.keys:
            if key in seen:
                report.problems.append(Problem("key.duplicate", result.name, f"also in {seen[key]}", key))
            else:
                seen[key] = result.name
        entry = entries.get(tar_path.name)
        if entry is not None:  # a shard that did not read through still has a size to compare
            complete = bool(result.md5)
            nsamples = len(result.keys) if complete else None
            report.problems.extend(_compare_entry(tar_path.name, entry, tar_path.stat().st_size, result.md5, nsamples))
        if on_shard:
            on_shard(result.name)
    if workers > 1:
        pool.shutdown()
    return report
