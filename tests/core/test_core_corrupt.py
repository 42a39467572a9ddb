"""Damaged sets: validate_set names each problem with a code; TripleReader skips what it cannot read.

Every case starts from a copy of one clean set of 3 shards x 4 samples and damages shard 1 (or
copies a sample across shards); the other shards' samples must all still come through.
"""

from __future__ import annotations

import io
import json
import random
import shutil

import core_shards as cs
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from cafe_core import InputStatus, ShardSet, TripleError, TripleReader
from cafe_core.tario import TarCorruptError
from cafe_core.triple import encode_metadata
from cafe_core.validate import validate_set

NUM_SHARDS, PER_SHARD = 3, 4
SHARD = "shard-000001"


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "set"
    cs.write_set(root, cs.simple_inputs(NUM_SHARDS * PER_SHARD), max_samples=PER_SHARD)
    assert validate_set(root).ok
    return root


@pytest.fixture
def damaged(clean_set, tmp_path):
    """A private copy of the clean set, and the keys per shard before any damage."""
    root = tmp_path / "set"
    shutil.copytree(clean_set, root)
    return root, cs.shard_keys(root)


def read_all(root, on_error="warn"):
    reader = TripleReader(root, on_error=on_error)
    keys = [t.key for t in reader]
    return keys, reader.report


def problems_by_code(report) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for problem in report.problems:
        grouped.setdefault(problem.code, []).append(problem)
    return grouped


def other_keys(keys_by_shard, damaged_shard=SHARD) -> list[str]:
    return [k for name, keys in keys_by_shard.items() if name != f"{damaged_shard}.tar" for k in keys]


def assert_others_untouched(root, keys_by_shard, damaged_shard=SHARD):
    """Only the damaged shard is reported in a full validation of the other shards' tars."""
    report = validate_set(root)
    for problem in report.problems:
        assert problem.shard in (damaged_shard, f"{damaged_shard}.tar"), problem
    keys, _ = read_all(root)
    assert set(other_keys(keys_by_shard, damaged_shard)) <= set(keys)


def rewrite_shard(root, transform):
    """Rewrite shard 1 through cafe_core's TarStreamWriter with its members transformed."""
    path = root / f"{SHARD}.tar"
    cs.rewrite_tar(path, transform(cs.read_members(path)))


# -- truncated ----------------------------------------------------------------------------------


def test_truncated_tar(damaged):
    root, keys_by_shard = damaged
    path = root / f"{SHARD}.tar"
    offsets = cs.member_offsets(path)
    name, _, data_offset, size = offsets[2 * 5 + 1]  # third sample's reference.png
    assert name.endswith(".reference.png")
    path.write_bytes(path.read_bytes()[: data_offset + size // 2])

    report = validate_set(root)
    codes = problems_by_code(report)
    assert "tar.corrupt" in codes
    (corrupt,) = codes["tar.corrupt"]
    assert corrupt.shard == SHARD
    assert "truncated" in corrupt.message
    assert report.num_samples == NUM_SHARDS * PER_SHARD - 2  # the cut sample and the one after it
    assert_others_untouched(root, keys_by_shard)

    keys, read = read_all(root)
    assert (
        keys
        == other_keys(keys_by_shard)[:PER_SHARD]
        + keys_by_shard[f"{SHARD}.tar"][:2]
        + other_keys(keys_by_shard)[PER_SHARD:]
    )
    assert read.samples_read == 10
    assert read.samples_skipped >= 1
    assert read.shards_corrupt == 1
    assert read.shards_read == NUM_SHARDS - 1
    assert any("truncated" in p for p in read.problems)
    with pytest.raises(TarCorruptError, match="truncated"):
        read_all(root, on_error="raise")


# -- a member missing ---------------------------------------------------------------------------


def test_member_missing(damaged):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][1]
    rewrite_shard(root, lambda members: [(n, d) for n, d in members if n != f"{victim}.mask.png"])

    report = validate_set(root)
    codes = problems_by_code(report)
    (incomplete,) = codes["sample.incomplete"]
    assert (incomplete.shard, incomplete.key) == (SHARD, victim)
    assert "mask.png" in incomplete.message
    assert [p.shard for p in codes["index.md5"]] == [f"{SHARD}.tar"]  # the size may stay: tars pad to 10 KiB
    assert report.num_samples == NUM_SHARDS * PER_SHARD
    assert_others_untouched(root, keys_by_shard)

    keys, read = read_all(root)
    assert victim not in keys
    assert len(keys) == read.samples_read == NUM_SHARDS * PER_SHARD - 1
    assert read.samples_skipped == 1
    assert read.shards_corrupt == 0
    assert victim in read.problems[0] and "mask.png" in read.problems[0]
    with pytest.raises(TripleError, match=victim):
        read_all(root, on_error="raise")


# -- bad json -----------------------------------------------------------------------------------


def test_bad_json(damaged):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][2]
    rewrite_shard(
        root, lambda members: [(n, b'{"schema_version": 1, "subj' if n == f"{victim}.json" else d) for n, d in members]
    )

    codes = problems_by_code(validate_set(root))
    (invalid,) = codes["json.invalid"]
    assert (invalid.shard, invalid.key) == (SHARD, victim)
    assert_others_untouched(root, keys_by_shard)

    keys, read = read_all(root)
    assert victim not in keys
    assert read.samples_read == NUM_SHARDS * PER_SHARD - 1
    assert read.samples_skipped == 1
    with pytest.raises(TripleError, match=victim):
        read_all(root, on_error="raise")


def test_json_breaking_the_schema(damaged):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][0]

    def transform(members):
        out = []
        for name, data in members:
            if name == f"{victim}.json":
                meta = json.loads(data)
                meta["round"] = 2  # generated, but no `generation` block
                data = encode_metadata(meta)
            out.append((name, data))
        return out

    rewrite_shard(root, transform)
    codes = problems_by_code(validate_set(root))
    (schema,) = codes["json.schema"]
    assert schema.key == victim
    assert "generation" in schema.message
    keys, read = read_all(root)
    assert victim not in keys
    assert read.samples_skipped == 1


# -- garbage bytes ------------------------------------------------------------------------------


def test_garbage_over_a_header(damaged):
    root, keys_by_shard = damaged
    path = root / f"{SHARD}.tar"
    name, header_offset, _, _ = cs.member_offsets(path)[2 * 5]  # third sample's first header
    assert name.endswith(".target.jpg")
    data = bytearray(path.read_bytes())
    data[header_offset : header_offset + 512] = random.Random(0).randbytes(512)
    path.write_bytes(bytes(data))

    report = validate_set(root)
    codes = problems_by_code(report)
    (corrupt,) = codes["tar.corrupt"]
    assert corrupt.shard == SHARD
    assert f"byte {header_offset}" in corrupt.message
    assert "after 2 samples" in corrupt.message  # both whole samples before the break are checked
    assert report.num_samples == 10  # the 4 + 2 samples of shards 0 and 1 before the break, and shard 2
    assert_others_untouched(root, keys_by_shard)

    keys, read = read_all(root)
    shard_keys = keys_by_shard[f"{SHARD}.tar"]
    # The two samples wholly before the garbled header are intact and must still be read.
    assert set(shard_keys[:2]) <= set(keys)
    assert set(other_keys(keys_by_shard)) <= set(keys)
    assert read.samples_read == 10
    assert read.samples_skipped >= 1
    assert read.shards_corrupt == 1
    with pytest.raises(TarCorruptError, match="not a tar header"):
        read_all(root, on_error="raise")


def test_garbage_inside_an_image(damaged):
    root, keys_by_shard = damaged
    path = root / f"{SHARD}.tar"
    victim = keys_by_shard[f"{SHARD}.tar"][3]
    (entry,) = [m for m in cs.member_offsets(path) if m[0] == f"{victim}.target.jpg"]
    _, _, data_offset, size = entry
    data = bytearray(path.read_bytes())
    data[data_offset : data_offset + size] = random.Random(1).randbytes(size)
    path.write_bytes(bytes(data))

    codes = problems_by_code(validate_set(root))
    (decode,) = codes["image.decode"]
    assert decode.key == victim
    assert "index.md5" in codes  # same size, different bytes
    assert "index.filesize" not in codes
    keys, read = read_all(root)
    assert keys == [k for ks in keys_by_shard.values() for k in ks if k != victim]
    assert read.samples_skipped == 1


# -- duplicate key across shards ----------------------------------------------------------------


def copy_sample(root, keys_by_shard, into: str) -> str:
    """Append shard 0's first sample to the end of shard `into` (0: a repeat within the shard)."""
    duplicate = keys_by_shard["shard-000000.tar"][0]
    source = [(n, d) for n, d in cs.read_members(root / "shard-000000.tar") if n.startswith(duplicate)]
    target = root / f"{into}.tar"
    cs.rewrite_tar(target, cs.read_members(target) + source)
    return duplicate


@pytest.mark.parametrize("into", ["shard-000002", "shard-000000"], ids=["across-shards", "within-a-shard"])
def test_duplicate_key_is_reported(damaged, into):
    root, keys_by_shard = damaged
    duplicate = copy_sample(root, keys_by_shard, into)
    report = validate_set(root)
    codes = problems_by_code(report)
    (dup,) = codes["key.duplicate"]
    assert (dup.shard, dup.key) == (into, duplicate)
    assert "shard-000000" in dup.message
    assert report.num_samples == NUM_SHARDS * PER_SHARD + 1
    assert_others_untouched(root, keys_by_shard, damaged_shard=into)


@pytest.mark.parametrize("into", ["shard-000002", "shard-000000"], ids=["across-shards", "within-a-shard"])
def test_duplicate_key_is_skipped_by_reader(damaged, into):
    root, keys_by_shard = damaged
    duplicate = copy_sample(root, keys_by_shard, into)
    keys, read = read_all(root)
    assert keys.count(duplicate) == 1
    assert keys == [k for ks in keys_by_shard.values() for k in ks]  # the first copy is the one kept
    assert read.samples_read == NUM_SHARDS * PER_SHARD
    assert read.samples_skipped == 1
    assert duplicate in read.problems[0]
    with pytest.raises(TripleError, match=f"duplicate key '{duplicate}'"):
        read_all(root, on_error="raise")


def test_sample_repeated_back_to_back_is_reported(damaged):
    from cafe_core.index import build_index, write_index
    from cafe_core.layout import detect_layout

    root, keys_by_shard = damaged
    repeated = keys_by_shard["shard-000000.tar"][0]
    path = root / "shard-000000.tar"
    members = cs.read_members(path)
    cs.rewrite_tar(path, members[:5] + members[:5] + members[5:])
    with pytest.raises(ValueError, match="duplicate file name"):  # what a plain webdataset reader makes of it
        list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    layout = detect_layout(root)
    write_index(layout, build_index(layout, from_files=True), pid=0, fsync=False)  # `cafe shards index`
    report = validate_set(root)
    assert not report.ok
    assert repeated in {p.key for p in report.problems}


# -- decompression bomb -------------------------------------------------------------------------


def test_decompression_bomb_is_skipped_not_fatal(tmp_path, monkeypatch):
    big = cs.factories.make_triple(99, size=(256, 192))  # 49k pixels
    inputs = [*cs.simple_inputs(3), (InputStatus.ok("inputs/big.jpg"), [big])]
    cs.write_set(tmp_path, inputs, max_samples=10)
    # PIL's own guard: images over 2 x MAX_IMAGE_PIXELS raise DecompressionBombError on open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    codes = problems_by_code(validate_set(tmp_path))
    assert {p.key for p in codes["image.decode"]} == {big.key}
    keys, read = read_all(tmp_path)
    assert keys == [cs.triple(i).key for i in range(3)]
    assert read.samples_skipped == 1
    with pytest.raises(TripleError, match=big.key):
        read_all(tmp_path, on_error="raise")


# -- sample-level contract codes ----------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("suffix", "make_bytes", "code"),
    [
        ("mask.png", lambda: _png(Image.new("RGB", (64, 48))), "sample.contract"),
        ("mask.png", lambda: _png(Image.new("L", (10, 10))), "sample.contract"),
        ("reference.png", lambda: b"not a png", "image.decode"),
        ("prompt.txt", lambda: b"\xff\xfe caf\xe9", "prompt.encoding"),
        ("prompt.txt", lambda: b"   ", "sample.contract"),
        ("extra.txt", lambda: b"unexpected", "sample.extra_member"),
    ],
)
def test_sample_level_codes(damaged, suffix, make_bytes, code):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][1]

    def transform(members):
        out = [(n, make_bytes() if n == f"{victim}.{suffix}" else d) for n, d in members]
        if suffix == "extra.txt":
            at = [n for n, _ in out].index(f"{victim}.json") + 1
            out.insert(at, (f"{victim}.{suffix}", make_bytes()))
        return out

    rewrite_shard(root, transform)
    codes = problems_by_code(validate_set(root))
    assert [p.key for p in codes[code]] == [victim]
    keys, read = read_all(root)
    if code == "sample.extra_member":  # still a full triple: the reader takes it
        assert victim in keys
    else:
        assert victim not in keys
        assert read.samples_skipped == 1
    assert read.samples_read == len(keys)


# -- set-level codes ----------------------------------------------------------------------------


def test_set_level_codes(damaged):
    root, _ = damaged
    (root / "shard-000002.tar").unlink()  # stats.json without its tar
    (root / "shard-000001.stats.json").unlink()  # tar without stats.json
    (root / ".shard-000003.tar.77.tmp").write_bytes(b"partial")
    (root / "dataset.json").unlink()
    report = validate_set(root)
    codes = report.codes()
    assert codes["shard.missing"] == 1
    assert codes["shard.unfinished"] == 1
    assert codes["set.temporary"] == 1
    assert codes["set.open"] == 1
    assert codes["index.stale"] == 2  # the index lists both a missing and an unfinished shard
    assert report.num_shards == 1
    assert report.num_samples == PER_SHARD


def test_missing_index_and_status(damaged):
    root, _ = damaged
    (root / "shardindex.json").unlink()
    (root / f"{SHARD}.status.parquet").write_bytes(b"PAR1 not really")
    codes = validate_set(root).codes()
    assert codes == {"index.missing": 1, "status.unreadable": 1}


def test_validate_with_worker_processes_finds_the_same_problems(damaged):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][1]
    rewrite_shard(root, lambda members: [(n, d) for n, d in members if n != f"{victim}.json"])
    seen = []
    serial = validate_set(root)
    parallel = validate_set(root, workers=2, on_shard=seen.append)
    assert serial.problems == parallel.problems
    assert serial.num_samples == parallel.num_samples == NUM_SHARDS * PER_SHARD
    assert sorted(seen) == [f"shard-{n:06d}" for n in range(NUM_SHARDS)]


# -- fast mode ----------------------------------------------------------------------------------


def test_fast_mode_on_a_clean_set(clean_set):
    report = validate_set(clean_set, fast=True)
    assert report.ok, report.problems
    assert report.num_samples == NUM_SHARDS * PER_SHARD
    assert report.fast


def test_fast_mode_catches_a_changed_byte(damaged):
    root, _ = damaged
    path = root / f"{SHARD}.tar"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))
    report = validate_set(root, fast=True)
    assert [(p.code, p.shard) for p in report.problems] == [("index.md5", f"{SHARD}.tar")]


def test_fast_mode_catches_a_size_change(damaged):
    root, _ = damaged
    path = root / "shard-000002.tar"
    with open(path, "ab") as f:
        f.write(bytes(512))
    codes = validate_set(root, fast=True).codes()
    assert codes == {"index.filesize": 1, "index.md5": 1}


def test_fast_mode_catches_a_missing_shard(damaged):
    root, _ = damaged
    (root / "shard-000000.tar").unlink()
    codes = validate_set(root, fast=True).codes()
    assert codes["shard.missing"] == 1
    assert codes["index.stale"] == 1


# -- the good samples are the written ones ------------------------------------------------------


def test_reader_keeps_pixels_of_good_samples_in_a_damaged_set(damaged):
    root, keys_by_shard = damaged
    victim = keys_by_shard[f"{SHARD}.tar"][0]
    rewrite_shard(root, lambda members: [(n, d) for n, d in members if n != f"{victim}.prompt.txt"])
    expected = {cs.triple(i).key: cs.triple(i) for i in range(NUM_SHARDS * PER_SHARD)}
    got = list(TripleReader(root))
    assert len(got) == NUM_SHARDS * PER_SHARD - 1
    for triple in got:
        assert np.array_equal(np.asarray(triple.mask), np.asarray(expected[triple.key].mask))
        assert triple.metadata == expected[triple.key].metadata


def test_closing_again_after_repair_restores_a_valid_set(damaged):
    root, _ = damaged
    (root / "shard-000001.stats.json").unlink()
    ShardSet(root).close(fsync=False)  # drops the unfinished shard, rewrites index and dataset.json
    report = validate_set(root)
    assert report.ok, report.problems
    assert report.num_samples == (NUM_SHARDS - 1) * PER_SHARD


def test_fast_mode_catches_a_missing_status_table(damaged):
    root, _ = damaged
    (root / f"{SHARD}.status.parquet").unlink()
    report = validate_set(root, fast=True)
    assert report.codes() == {"status.missing": 1}
    assert f"{SHARD}.status.parquet is missing" in str(report.problems[0])
