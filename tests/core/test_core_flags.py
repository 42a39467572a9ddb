"""cafe_core.flags: the flags file beside a set, and stats that honour it."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import core_shards as cs
import pyarrow.parquet as pq
import pytest

from cafe_core import InputStatus, ShardSet, flagged_keys, flags, make_key
from cafe_core.flags import FLAGS_NAME, Flag, add_flag, flags_path, read_flags, remove_flag, write_flags
from cafe_core.layout import FLAGS_LOCK_NAME
from cafe_core.lock import WriterLock, WriterLockedError
from cafe_core.stats import shard_set_stats
from cafe_core.validate import validate_set

KEY_A, KEY_B = make_key("a"), make_key("b")


@pytest.fixture
def flag_set(tmp_path: Path) -> Path:
    """10 samples, box scores 0.1 .. 1.0, rounds 0 (first 6) and 1 (last 4)."""
    inputs = []
    for i in range(10):
        triple = cs.factories.make_triple(i, round_=0 if i < 6 else 1, scores={"box": (i + 1) / 10, "mask_iou": 0.5})
        inputs.append((InputStatus.ok(cs.input_key(i)), [triple]))
    cs.write_set(tmp_path / "set", inputs, max_samples=4)
    return tmp_path / "set"


def keys_of(root: Path) -> list[str]:
    return cs.all_keys(root)


def test_no_flags_file_means_no_flags(tmp_path: Path) -> None:
    assert read_flags(tmp_path) == [] and flagged_keys(tmp_path) == set()
    assert remove_flag(tmp_path, KEY_A) is False


def test_add_read_replace_remove(tmp_path: Path) -> None:
    first = add_flag(tmp_path, KEY_A, "  mask misses the subject ")
    assert first.reason == "mask misses the subject" and first.flagged_at.tzinfo is not None
    add_flag(tmp_path, KEY_B, "duplicate")
    add_flag(tmp_path, KEY_A, "wrong subject")  # a second flag of a key replaces the first
    flags = read_flags(tmp_path)
    assert [(f.key, f.reason) for f in flags] == [(KEY_B, "duplicate"), (KEY_A, "wrong subject")]
    assert flagged_keys(tmp_path) == {KEY_A, KEY_B}
    assert remove_flag(tmp_path, KEY_A) is True and remove_flag(tmp_path, KEY_A) is False
    assert flagged_keys(tmp_path) == {KEY_B}


def test_the_file_is_a_plain_parquet_of_keys(tmp_path: Path) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    add_flag(tmp_path, KEY_A, "bad mask", flagged_at=when)
    path = tmp_path / FLAGS_NAME
    assert flags_path(tmp_path) == path
    table = pq.read_table(path)
    assert table.column_names == ["key", "reason", "flagged_at"]
    assert table.to_pylist() == [{"key": KEY_A, "reason": "bad mask", "flagged_at": when}]
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


@pytest.mark.parametrize(
    ("key", "reason", "message"),
    [
        ("NOT-A-KEY", "bad", "16 lowercase hex"),
        (KEY_A, "   ", "say why"),
        (KEY_A, "x" * 501, "at most 500"),
    ],
)
def test_bad_flags_are_refused(tmp_path: Path, key: str, reason: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        add_flag(tmp_path, key, reason)
    assert not flags_path(tmp_path).exists()


def test_flag_times_need_a_timezone() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Flag(KEY_A, "bad", datetime(2026, 1, 1))


def test_write_flags_refuses_a_repeated_key(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="twice"):
        write_flags(tmp_path, [Flag(KEY_A, "a", now), Flag(KEY_A, "b", now)])


def test_a_damaged_flags_file_fails_loudly(tmp_path: Path) -> None:
    flags_path(tmp_path).write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="delete it to drop every flag"):
        flagged_keys(tmp_path)
    with pytest.raises(ValueError, match="delete it to drop every flag"):
        read_flags(tmp_path)


def _flag_many(args: tuple[str, int]) -> None:
    root, worker = args
    for i in range(10):
        add_flag(root, make_key(f"w{worker}-{i}"), f"worker {worker}")


def test_writers_in_several_processes_lose_no_flag(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_flag_many, [(str(tmp_path), w) for w in range(4)])
    assert flagged_keys(tmp_path) == {make_key(f"w{w}-{i}") for w in range(4) for i in range(10)}


def test_stats_leave_flagged_samples_out(flag_set: Path) -> None:
    keys = keys_of(flag_set)
    before = shard_set_stats(flag_set)
    assert before["num_flagged"] == 0 and before["num_usable"] == 10
    add_flag(flag_set, keys[0], "bad")  # round 0, box 0.1
    add_flag(flag_set, keys[9], "bad")  # round 1, box 1.0
    add_flag(flag_set, make_key("not in this set"), "stale")  # a key the set lacks counts for nothing
    stats = shard_set_stats(flag_set)
    assert stats["num_samples"] == 10  # what is on disk
    assert stats["num_flagged"] == 2 and stats["num_usable"] == 8
    assert stats["rounds"] == {"0": 5, "1": 3}
    box = stats["scores"]["box"]
    assert box["count"] == 8 and box["min"] == pytest.approx(0.2) and box["max"] == pytest.approx(0.9)
    assert stats["subjects"] == {"red cube": 8}
    assert stats["status"] == before["status"] and stats["num_inputs"] == before["num_inputs"]


def test_dataset_json_records_the_set_as_written(flag_set: Path) -> None:
    """Closing a set records what the job wrote; flags are an overlay read fresh by stats."""
    add_flag(flag_set, keys_of(flag_set)[0], "bad")
    summary = ShardSet(flag_set).summarize()
    assert summary["rounds"] == {"0": 6, "1": 4} and "num_flagged" not in summary
    dataset = json.loads((flag_set / "dataset.json").read_text())
    assert "num_flagged" not in dataset


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_flag_write_removes_temporaries_of_killed_flag_writes(tmp_path: Path) -> None:
    add_flag(tmp_path, KEY_A, "first")
    killed = tmp_path / f".{FLAGS_NAME}.{dead_pid()}.k1ll3d00.tmp"  # a write SIGKILLed before its rename
    older = tmp_path / f".{FLAGS_NAME}.x7yz0q2w.tmp"  # an older version's name, without a pid
    for temp in (killed, older):
        temp.write_bytes(b"PAR1 torn")
    os.utime(older, (1_000_000_000, 1_000_000_000))
    add_flag(tmp_path, KEY_B, "second")
    assert not killed.exists() and not older.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FLAGS_NAME]
    assert [f.key for f in read_flags(tmp_path)] == [KEY_A, KEY_B]


def test_a_flag_write_waits_then_is_refused_naming_the_holder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(flags, "FLAG_LOCK_WAIT_S", 0.3)
    with WriterLock(tmp_path, "flags", name=FLAGS_LOCK_NAME):  # a stuck flag writer (another fd: a rival)
        with pytest.raises(WriterLockedError, match=f"is being written by pid {os.getpid()} on host .* \\(flags"):
            add_flag(tmp_path, KEY_A, "blocked")
        with pytest.raises(WriterLockedError, match="flags"):
            write_flags(tmp_path, [])
    assert not flags_path(tmp_path).exists()
    add_flag(tmp_path, KEY_A, "after")  # the lock is free again
    assert flagged_keys(tmp_path) == {KEY_A}


def test_validate_reports_a_temporary_flags_file(flag_set: Path) -> None:
    add_flag(flag_set, keys_of(flag_set)[0], "bad mask")
    temp = flag_set / f".{FLAGS_NAME}.{dead_pid()}.abcd1234.tmp"
    temp.write_bytes(b"PAR1 torn")
    report = validate_set(flag_set)
    assert not report.ok
    assert [(p.code, p.shard) for p in report.problems] == [("set.temporary", temp.name)]
    assert str(temp) in report.problems[0].message and "flag write" in report.problems[0].message
    add_flag(flag_set, keys_of(flag_set)[1], "bad prompt")  # the next flag write cleans it up
    assert validate_set(flag_set).ok
