"""ShardSet write modes: overwrite, incremental, extend."""

from __future__ import annotations

import json

import core_shards as cs
import pytest
from core_shards import ok, skipped

from cafe_core import InputStatus, ShardSet, TripleReader
from cafe_core.validate import validate_set


def inputs(count: int, start: int = 0) -> list[cs.Input]:
    """ok inputs with a skipped one every 4th, so status-only rows are part of every mode."""
    return [skipped(i) if i % 4 == 3 else ok(i) for i in range(start, start + count)]


def file_identity(path):
    """Bytes and inode/mtime: a kept file is the same file, not a rewrite with equal bytes."""
    st = path.stat()
    return cs.md5(path), st.st_ino, st.st_mtime_ns


def shard_files(root, number: int):
    name = f"shard-{number:06d}"
    return [root / f"{name}.tar", root / f"{name}.status.parquet", root / f"{name}.stats.json"]


# -- overwrite ----------------------------------------------------------------------------------


def test_overwrite_removes_old_shards_and_keeps_unrelated_files(tmp_path):
    cs.write_set(tmp_path, cs.simple_inputs(9), max_samples=3)
    assert len(cs.tars(tmp_path)) == 3
    (tmp_path / "README.md").write_text("notes about this set")
    (tmp_path / "previews").mkdir()
    (tmp_path / "previews" / "grid.png").write_bytes(b"png")
    (tmp_path / "shard-backup.tar.bak").write_bytes(b"keep me")

    cs.write_set(tmp_path, cs.simple_inputs(2, start=100), max_samples=3)

    assert [p.name for p in cs.tars(tmp_path)] == ["shard-000000.tar"]
    assert not shard_files(tmp_path, 1)[0].exists()
    assert not any(p.exists() for n in (1, 2) for p in shard_files(tmp_path, n))
    assert cs.all_keys(tmp_path) == [cs.triple(100).key, cs.triple(101).key]
    assert (tmp_path / "README.md").read_text() == "notes about this set"
    assert (tmp_path / "previews" / "grid.png").read_bytes() == b"png"
    assert (tmp_path / "shard-backup.tar.bak").read_bytes() == b"keep me"
    assert validate_set(tmp_path).ok
    assert json.loads((tmp_path / "dataset.json").read_text())["num_samples"] == 2


def test_overwrite_removes_unfinished_leftovers_and_temporaries(tmp_path):
    cs.write_set(tmp_path, cs.simple_inputs(6), max_samples=3)
    (tmp_path / "shard-000001.stats.json").unlink()  # shard 1 now looks unfinished
    (tmp_path / ".shard-000002.tar.4242.tmp").write_bytes(b"half a tar")
    cs.write_set(tmp_path, cs.simple_inputs(3, start=50), max_samples=3)
    assert [p.name for p in cs.tars(tmp_path)] == ["shard-000000.tar"]
    assert not (tmp_path / "shard-000001.status.parquet").exists()
    assert cs.hidden_temporaries(tmp_path) == []


def test_overwrite_leaves_other_prefixes_alone(tmp_path):
    with ShardSet(tmp_path, prefix="other").writer(fsync=False) as writer:
        writer.add(*ok(1))
    other = file_identity(tmp_path / "other-000000.tar")
    with ShardSet(tmp_path, prefix="shard").writer(fsync=False) as writer:
        writer.add(*ok(2))
    assert file_identity(tmp_path / "other-000000.tar") == other
    assert (tmp_path / "other-000000.stats.json").exists()


# -- incremental --------------------------------------------------------------------------------


@pytest.fixture
def closed_set(tmp_path):
    """A closed set of 20 inputs, max_samples=4 -> shards 0..4 (15 samples, 5 skipped rows)."""
    root = tmp_path / "set"
    cs.write_set(root, inputs(20), max_samples=4)
    return root


def test_incremental_on_a_complete_set_changes_no_shard(closed_set):
    before = {p.name: file_identity(p) for p in closed_set.iterdir() if not p.name.endswith(".json")}
    stats_before = {p.name: p.read_bytes() for p in closed_set.glob("*.stats.json")}
    added = cs.write_set(closed_set, inputs(20), mode="incremental", max_samples=4)
    assert added == [False] * 20
    after = {p.name: file_identity(p) for p in closed_set.iterdir() if not p.name.endswith(".json")}
    assert after == before
    assert {p.name: p.read_bytes() for p in closed_set.glob("*.stats.json")} == stats_before
    assert validate_set(closed_set).ok


def test_incremental_redoes_an_unfinished_shard_and_keeps_done_ones(closed_set, tmp_path):
    reference = cs.tar_md5s(closed_set)
    last = max(int(p.stem.split("-")[1]) for p in cs.tars(closed_set))
    done = {n: [file_identity(p) for p in shard_files(closed_set, n)] for n in range(last)}
    # A crash in the last shard: its tar and status renamed in, but no stats.json; plus a
    # hidden temporary of a shard that never got its final name.
    shard_files(closed_set, last)[2].unlink()
    (closed_set / f".shard-{last + 1:06d}.tar.99999.tmp").write_bytes(b"partial")
    (closed_set / "shardindex.json").unlink()

    added = cs.write_set(closed_set, inputs(20), mode="incremental", max_samples=4)

    done_inputs = {row["input_key"] for row in cs.status_rows(closed_set) if row["shard"] != f"shard-{last:06d}"}
    assert added == [cs.input_key(i) not in done_inputs for i in range(20)]
    assert added.count(True) > 0 and added.count(False) > 0
    for n, identity in done.items():
        assert [file_identity(p) for p in shard_files(closed_set, n)] == identity
    assert cs.tar_md5s(closed_set) == reference
    assert cs.hidden_temporaries(closed_set) == []
    assert cs.unfinished_tars(closed_set) == []
    report = validate_set(closed_set)
    assert report.ok, report.problems


def test_incremental_redoes_a_hole_in_the_middle(closed_set):
    reference = cs.tar_md5s(closed_set)
    hole_inputs = [row["input_key"] for row in cs.status_rows(closed_set) if row["shard"] == "shard-000001"]
    for path in shard_files(closed_set, 1)[1:]:
        path.unlink()  # tar left without status and stats
    kept = file_identity(shard_files(closed_set, 2)[0])
    added = cs.write_set(closed_set, inputs(20), mode="incremental", max_samples=4)
    assert [cs.input_key(i) for i, a in enumerate(added) if a] == hole_inputs
    assert len(hole_inputs) == 5  # 4 samples and the skipped row between them
    assert file_identity(shard_files(closed_set, 2)[0]) == kept
    assert cs.tar_md5s(closed_set) == reference
    assert validate_set(closed_set).ok


def test_incremental_appends_new_inputs(closed_set):
    before = {p.name: file_identity(p) for p in cs.tars(closed_set)}
    added = cs.write_set(closed_set, inputs(28), mode="incremental", max_samples=4)
    assert added == [False] * 20 + [True] * 8
    for name, identity in before.items():
        assert file_identity(closed_set / name) == identity
    assert len(set(cs.all_keys(closed_set))) == len(cs.all_keys(closed_set)) == 21
    assert validate_set(closed_set).ok


def test_incremental_removes_unfinished_shards_it_does_not_reach(closed_set):
    # A leftover from a wider crashed run (shard 9, e.g. another writer's) is dropped at close.
    (closed_set / "shard-000009.tar").write_bytes(b"\0" * 1024)
    (closed_set / "shard-000009.status.parquet").write_bytes(b"junk")
    cs.write_set(closed_set, inputs(20), mode="incremental", max_samples=4)
    assert not (closed_set / "shard-000009.tar").exists()
    assert not (closed_set / "shard-000009.status.parquet").exists()
    assert validate_set(closed_set).ok


def test_incremental_on_empty_folder_is_a_plain_write(tmp_path):
    added = cs.write_set(tmp_path / "new", inputs(5), mode="incremental", max_samples=4)
    cs.write_set(tmp_path / "plain", inputs(5), max_samples=4)
    assert added == [True] * 5
    assert cs.tar_md5s(tmp_path / "new") == cs.tar_md5s(tmp_path / "plain")


# -- extend -------------------------------------------------------------------------------------


def test_extend_appends_after_the_highest_number(closed_set):
    before = {p.name: file_identity(p) for p in cs.tars(closed_set)}
    highest = max(int(p.stem.split("-")[1]) for p in cs.tars(closed_set))
    cs.write_set(closed_set, cs.simple_inputs(5, start=100), mode="extend", max_samples=4)
    names = [p.name for p in cs.tars(closed_set)]
    assert names[-2:] == [f"shard-{highest + 1:06d}.tar", f"shard-{highest + 2:06d}.tar"]
    for name, identity in before.items():
        assert file_identity(closed_set / name) == identity
    keys = cs.all_keys(closed_set)
    assert len(keys) == len(set(keys)) == 20
    assert validate_set(closed_set).ok
    dataset = json.loads((closed_set / "dataset.json").read_text())
    assert dataset["num_samples"] == 20
    assert dataset["num_shards"] == highest + 3
    assert len(list(TripleReader(closed_set, on_error="raise"))) == 20


def test_extend_after_a_gap_uses_the_highest_number(tmp_path):
    with ShardSet(tmp_path).writer(fsync=False, max_samples=1) as writer:
        writer.add(*ok(0))
    for path in shard_files(tmp_path, 0):
        path.rename(path.with_name(path.name.replace("000000", "000007")))
    assert ShardSet(tmp_path).prepare("extend") == 8


@pytest.mark.parametrize("leftover", ["tar_without_stats", "status_only"])
def test_extend_refuses_a_set_with_an_unfinished_shard(closed_set, leftover):
    if leftover == "tar_without_stats":
        shard_files(closed_set, 2)[2].unlink()
    else:
        (closed_set / "shard-000012.status.parquet").write_bytes(b"junk")
    name = "shard-000002" if leftover == "tar_without_stats" else "shard-000012"
    before = {p.name: file_identity(p) for p in cs.tars(closed_set)}
    with pytest.raises(RuntimeError, match=rf"cannot extend a set with unfinished shards \({name}\).*incremental"):
        cs.write_set(closed_set, cs.simple_inputs(2, start=100), mode="extend")
    assert {p.name: file_identity(p) for p in cs.tars(closed_set)} == before


def test_extend_refuses_a_key_already_in_the_set(closed_set):
    before = {p.name: file_identity(p) for p in cs.tars(closed_set)}
    duplicate = cs.triple(5)
    with pytest.raises(ValueError, match=rf"duplicate key '{duplicate.key}'.*shard-00000\d"):
        cs.write_set(
            closed_set,
            [ok(100), (InputStatus.ok("inputs/another-name.jpg"), [duplicate])],
            mode="extend",
            max_samples=4,
        )
    # Nothing half-written: the old shards are untouched, the refused run's open shard is gone.
    assert {p.name: file_identity(p) for p in cs.tars(closed_set)} == before
    assert cs.hidden_temporaries(closed_set) == []
    keys = cs.all_keys(closed_set)
    assert keys.count(duplicate.key) == 1
    # The failed run left the set open; closing it again gives a valid set.
    ShardSet(closed_set).close(fsync=False)
    assert validate_set(closed_set).ok


def test_extend_on_empty_folder_starts_at_zero(tmp_path):
    cs.write_set(tmp_path, cs.simple_inputs(2), mode="extend")
    assert [p.name for p in cs.tars(tmp_path)] == ["shard-000000.tar"]
