"""Reading triples back from shards: a folder, a list of paths, or a brace pattern.

    reader = TripleReader("out/triples")             # warn and skip corrupt samples
    for triple in reader: ...
    print(reader.report)                             # read / skipped counts and why

Members group into samples the way webdataset groups them: consecutive members sharing the
part of the file name before the first dot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand
from PIL import Image

from cafe_core.index import read_index
from cafe_core.keys import KEY_PATTERN
from cafe_core.layout import INDEX_NAME, detect_layout
from cafe_core.tario import TarCorruptError, iter_tar_members
from cafe_core.triple import MEMBERS, Triple, TripleError, decode_triple

log = logging.getLogger(__name__)

ON_ERROR = ("warn", "raise")
MAX_PROBLEMS_KEPT = 1000


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/KEY.reference.png` -> (`KEY`, `reference.png`), webdataset's key/suffix split."""
    base = name.rsplit("/", 1)[-1]
    key, _, suffix = base.partition(".")
    return key, suffix


def group_samples(members: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) for each run of consecutive members sharing a key.

    When `members` raises TarCorruptError, the sample assembled so far is yielded first if it
    already has all its members, then the error is re-raised: a break that falls on the next
    sample's first header loses no whole sample, while a sample the break cut short is dropped.
    """
    key, sample = None, {}
    try:
        for name, data in members:
            member_key, suffix = split_member_name(name)
            # A suffix already present means the key repeats back to back: a second sample.
            if member_key != key or suffix in sample:
                if key is not None:
                    yield key, sample
                key, sample = member_key, {}
            sample[suffix] = data
    except TarCorruptError:
        if key is not None and all(m in sample for m in MEMBERS):
            yield key, sample
        raise
    if key is not None:
        yield key, sample


def iter_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of one tar file. Raises TarCorruptError where the tar breaks; a sample the
    break cut short is not yielded (see `group_samples`)."""
    with open(path, "rb") as f:
        yield from group_samples(iter_tar_members(f))


def resolve_shards(source: str | Path | Iterable[str | Path]) -> list[Path]:
    """The tar files a source names.

    A folder: the shards its index lists (or, with no index, its done shards, or failing that
    every `*.tar`). A string with braces: its expansion, e.g. `out/shard-{000000..000009}.tar`.
    A file: itself. A list: each element resolved in turn.
    """
    if not isinstance(source, str | Path):
        return [p for item in source for p in resolve_shards(item)]
    text = str(source)
    if "{" in text:
        return [Path(p) for p in braceexpand.braceexpand(text)]
    path = Path(text)
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            return [path / entry["url"] for entry in read_index(detect_layout(path))["shardlist"]]
        try:
            layout = detect_layout(path)
        except FileNotFoundError:
            return []
        done = layout.done_numbers()
        return [layout.tar_path(n) for n in done] if done else sorted(path.glob("*.tar"))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such shard, folder or pattern")
    return [path]


@dataclass
class ReadReport:
    """What a reader got through: samples read and skipped, and why each skip happened."""

    samples_read: int = 0
    samples_skipped: int = 0
    shards_read: int = 0
    shards_corrupt: int = 0
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)


class TripleReader:
    """Iterates `Triple`s from shards.

    on_error="warn": a sample that fails to decode or breaks the contract is logged, counted
    in `report` and skipped; a shard that breaks mid-way yields the samples before the break.
    on_error="raise": the first such problem raises (TripleError, TarCorruptError, or the
    decoder's error), naming the shard and key.
    A key seen before in this pass is a problem too: the later copy is skipped (or raises).
    """

    def __init__(self, source: str | Path | Iterable[str | Path], *, on_error: str = "warn") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error: {on_error!r} is not one of {', '.join(ON_ERROR)}")
        self.paths = resolve_shards(source)
        self.on_error = on_error
        self.report = ReadReport()

    def _problem(self, message: str, error_type: type[Exception]) -> None:
        # Called inside `except` blocks mostly, so a raised error chains the original as its context.
        if self.on_error == "raise":
            raise error_type(message)
        log.warning("skipping: %s", message)
        self.report.note(message)

    def __iter__(self) -> Iterator[Triple]:
        # Keys as 64-bit ints: a tenth of the memory of a set of strings on large sets.
        seen: set[int | str] = set()
        for path in self.paths:
            samples = iter_samples(path)
            while True:
                try:
                    key, members = next(samples)
                except StopIteration:
                    self.report.shards_read += 1
                    break
                except TarCorruptError as exc:
                    self.report.shards_corrupt += 1
                    self.report.samples_skipped += 1  # the sample the break cut short
                    self._problem(f"{path}: {exc}", TarCorruptError)
                    break
                ident = int(key, 16) if KEY_PATTERN.match(key) else key
                if ident in seen:
                    self.report.samples_skipped += 1
                    self._problem(f"{path.name}: duplicate key {key!r}, already read earlier", TripleError)
                    continue
                seen.add(ident)
                # DecompressionBombError derives from Exception only: name it, or one huge image
                # in a shard ends the whole read even in warn mode.
                try:
                    triple = decode_triple(key, members)
                except (TripleError, OSError, ValueError, UnicodeDecodeError, Image.DecompressionBombError) as exc:
                    self.report.samples_skipped += 1
                    self._problem(f"{path.name}: sample {key!r}: {exc}", TripleError)
                    continue
                self.report.samples_read += 1
                yield triple


def read_triples(source: str | Path | Iterable[str | Path], *, on_error: str = "warn") -> Iterator[Triple]:
    """Shorthand for `iter(TripleReader(source, on_error=on_error))`."""
    return iter(TripleReader(source, on_error=on_error))
