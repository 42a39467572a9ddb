"""Member offsets read lazily from tar headers: the same answers as a full listing, in any order."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest
from inspector_sets import real_triples

from cafe_core.reader import iter_samples
from cafe_core.tario import TarStreamWriter
from cafe_core.triple import MEMBERS
from cafe_inspector.errors import Unreadable
from cafe_inspector.shard_data import ShardMembers

TRIPLES = real_triples()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with open(path, "wb") as f:
        writer = TarStreamWriter(f)
        for key, members in samples:
            for suffix, data in members.items():
                writer.add(f"{key}.{suffix}", data)
        writer.finish()
    return path


def encoded(i: int) -> tuple[str, dict[str, bytes]]:
    return TRIPLES[i].key, TRIPLES[i].encode()


def test_lazy_offsets_match_the_samples_in_any_order(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "s.tar", [encoded(i) for i in range(10)])
    expected = dict(iter_samples(tar))
    for seed in range(3):
        members = ShardMembers(tar)
        keys = list(expected)
        random.Random(seed).shuffle(keys)
        for key in keys:
            for suffix in MEMBERS:
                assert members.read(key, suffix) == expected[key][suffix]


def test_the_first_sample_reads_only_a_few_headers(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "s.tar", [encoded(i) for i in range(10)])
    members = ShardMembers(tar)
    members.read(TRIPLES[0].key, "prompt.txt")
    assert not members.complete and members.num_samples_read == 1
    members.read(TRIPLES[9].key, "json")
    assert members.complete


def test_a_later_copy_of_a_key_is_ignored(tmp_path: Path) -> None:
    first, second = encoded(0), (TRIPLES[0].key, TRIPLES[1].encode())
    tar = write_tar(tmp_path / "s.tar", [first, encoded(2), second, encoded(3)])
    members = ShardMembers(tar)
    assert members.read(TRIPLES[3].key, "prompt.txt") == TRIPLES[3].encode()["prompt.txt"]
    assert members.read(TRIPLES[0].key, "target.jpg") == first[1]["target.jpg"]


def test_long_names_survive_a_resumed_scan(tmp_path: Path) -> None:
    """pax headers (names over 100 bytes) sit in front of their member: a resumed scan reads them again."""
    folder = "d" * 120
    tar = tmp_path / "pax.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as out:
        for i in range(4):
            key, members = encoded(i)
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{folder}/{key}.{suffix}")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    members = ShardMembers(tar)
    for i in (1, 3, 0, 2):
        key, expected = encoded(i)
        assert members.read(key, "json") == expected["json"]


def test_a_damaged_tar_serves_what_lies_before_the_break(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "s.tar", [encoded(i) for i in range(4)])
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    members = ShardMembers(tar)
    assert members.read(TRIPLES[0].key, "prompt.txt") == TRIPLES[0].encode()["prompt.txt"]
    with pytest.raises(Unreadable, match="the tar breaks"):
        members.read(TRIPLES[3].key, "prompt.txt")
    assert members.problem and "truncated" in members.problem
