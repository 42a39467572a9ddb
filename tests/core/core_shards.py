"""Helpers shared by the cafe_core tests: tiny inputs, writing a set, looking at its files.

Imported as `core_shards` (pytest puts this folder on sys.path for the tests in it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path

import factories

from cafe_core import InputStatus, ShardSet, Triple, make_key
from cafe_core.reader import iter_samples
from cafe_core.status import read_status_tables
from cafe_core.tario import TarStreamWriter, iter_tar_members

Input = tuple[InputStatus, list[Triple]]


@functools.cache
def triple(index: int, subject: int = 0, round_: int = 0) -> Triple:
    """factories.make_triple(index), with the key of subject `subject` of the same input."""
    base = factories.make_triple(index, round_=round_)
    if subject == 0:
        return base
    return dataclasses.replace(base, key=make_key(input_key(index), subject))


def input_key(index: int) -> str:
    return f"inputs/img-{index:05d}.jpg"


def ok(index: int, num_triples: int = 1) -> Input:
    return InputStatus.ok(input_key(index)), [triple(index, s) for s in range(num_triples)]


def skipped(index: int, reason: str = "decode.truncated") -> Input:
    return InputStatus(input_key(index), "skipped", reason=reason, error="image file is truncated"), []


def failed(index: int, reason: str = "model.error") -> Input:
    return InputStatus(input_key(index), "failed", reason=reason, error="RuntimeError: boom"), []


def simple_inputs(count: int, start: int = 0) -> list[Input]:
    """`count` ok inputs of one triple each."""
    return [ok(i) for i in range(start, start + count)]


def write_set(
    root: Path, inputs: Sequence[Input], *, mode: str = "overwrite", fsync: bool = False, **options
) -> list[bool]:
    """Write `inputs` as one process through ShardSet.writer; returns what each `add` returned."""
    added = []
    with ShardSet(root).writer(mode=mode, fsync=fsync, **options) as writer:
        for status, triples in inputs:
            added.append(writer.add(status, triples))
    return added


def md5(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def tars(root: Path) -> list[Path]:
    return sorted(Path(root).glob("*.tar"))


def tar_md5s(root: Path) -> dict[str, str]:
    return {p.name: md5(p) for p in tars(root)}


def shard_keys(root: Path) -> dict[str, list[str]]:
    """Sample keys per tar name, read from the tar bytes themselves."""
    return {p.name: [key for key, _ in iter_samples(p)] for p in tars(root)}


def all_keys(root: Path) -> list[str]:
    return [key for keys in shard_keys(root).values() for key in keys]


def status_rows(root: Path) -> list[dict]:
    paths = sorted(Path(root).glob("*.status.parquet"))
    return read_status_tables(paths).to_pylist()


def stats_json(root: Path, name: str) -> dict:
    return json.loads((Path(root) / f"{name}.stats.json").read_text())


def hidden_temporaries(root: Path) -> list[Path]:
    return sorted(Path(root).glob(".*.tmp"))


def unfinished_tars(root: Path) -> list[Path]:
    return [p for p in tars(root) if not p.with_name(p.name.removesuffix(".tar") + ".stats.json").is_file()]


def samples_of(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) of each sample in a tar, as cafe_core's reader groups them."""
    return list(iter_samples(path))


def read_members(path: Path) -> list[tuple[str, bytes]]:
    with open(path, "rb") as f:
        return list(iter_tar_members(f))


def rewrite_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> None:
    """Replace a tar with one holding exactly `members`, written by cafe_core's own tar writer."""
    with open(path, "wb") as f:
        writer = TarStreamWriter(f)
        for name, data in members:
            writer.add(name, data)
        writer.finish()


def member_offsets(path: Path) -> list[tuple[str, int, int, int]]:
    """(name, header offset, data offset, size) of each member, as Python's tarfile sees them."""
    with tarfile.open(path) as tar:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tar.getmembers()]


def rich_inputs(count: int) -> list[Input]:
    """`count` inputs in a fixed order: mostly one triple, some two, some skipped or failed."""
    result = []
    for i in range(count):
        if i % 9 == 4:
            result.append(skipped(i, "decode.truncated"))
        elif i % 13 == 7:
            result.append(failed(i, "model.error"))
        elif i % 11 == 5:
            result.append(ok(i, num_triples=2))
        else:
            result.append(ok(i))
    return result
