"""cafe_core.lock: one writer per set, in one process and across processes; leftovers cleaned and reported.

Writers in other processes (a SIGKILLed one, two at once) are in test_core_processes.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import core_shards as cs
import pytest

from cafe_core import ShardSet
from cafe_core.layout import LOCK_NAME
from cafe_core.lock import WriterLock, WriterLockedError, read_holder
from cafe_core.validate import validate_set


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_two_writers_in_one_process_are_one_too_many(tmp_path: Path) -> None:
    root = tmp_path / "set"
    with ShardSet(root).writer(mode="overwrite", fsync=False) as writer:
        writer.add(*cs.ok(0))
        holder = read_holder(root)
        assert holder is not None and holder.held and holder.is_this_process()
        with pytest.raises(WriterLockedError, match=f"{root} is being written by pid {os.getpid()}"):
            cs.write_set(root, cs.simple_inputs(2, start=5))
    assert read_holder(root) is None  # released, and its file removed
    assert cs.all_keys(root) == [cs.triple(0).key]  # the refused writer touched nothing
    cs.write_set(root, cs.simple_inputs(2, start=5))  # free again
    assert validate_set(root).ok


def test_a_job_keeps_the_lock_past_close_until_release(tmp_path: Path) -> None:
    root = tmp_path / "set"
    shard_set = ShardSet(root)
    shard_set.prepare("overwrite", job="improve-round")
    shard_set.close(fsync=False)  # a job still writes its report beside the closed set
    with pytest.raises(WriterLockedError, match=r"\(improve-round, since"):
        ShardSet(root).prepare("overwrite")
    shard_set.release()
    ShardSet(root).prepare("overwrite")


def test_prepare_removes_temporaries_it_can_prove_dead(tmp_path: Path) -> None:
    root = tmp_path / "set"
    cs.write_set(root, cs.simple_inputs(3), max_samples=2)
    shard_temp = root / f".shard-000009.tar.{os.getpid() + 1}.tmp"  # any of the set's own: under the lock, dead
    report_temp = root / f".round-report.json.{dead_pid()}.tmp"  # a killed job's report
    tool_temp = root / ".notes.txt.tmp"  # no pid; older than the lock
    for temp in (shard_temp, report_temp, tool_temp):
        temp.write_bytes(b"partial")
    os.utime(tool_temp, (1_000_000_000, 1_000_000_000))
    assert {p.shard for p in validate_set(root).problems if p.code == "set.temporary"} == {
        shard_temp.name,
        report_temp.name,
        tool_temp.name,
    }
    shard_set = ShardSet(root)
    shard_set.lock()
    live = root / f".round-report.json.{os.getppid()}.tmp"  # a live pid's, newer than the lock: kept
    live.write_bytes(b"in progress")
    now = time.time() + 1  # set, not left to the file system's clock, which may lag time.time() by a tick
    os.utime(live, (now, now))
    shard_set.prepare("incremental")
    assert [p.name for p in cs.hidden_temporaries(root)] == [live.name]
    shard_set.close(fsync=False)
    shard_set.release()


def test_a_lock_on_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        WriterLock(path, "training").acquire()


def test_a_released_lock_leaves_no_file_and_a_held_one_names_its_job(tmp_path: Path) -> None:
    with WriterLock(tmp_path, "training") as lock:
        holder = read_holder(tmp_path)
        assert (holder.pid, holder.job, holder.token, holder.held) == (os.getpid(), "training", lock.token, True)
        with pytest.raises(WriterLockedError, match=r"\(training, since .*\); wait for it to finish or stop it"):
            WriterLock(tmp_path, "training").acquire()
    assert not (tmp_path / LOCK_NAME).exists()
