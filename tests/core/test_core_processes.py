"""Real processes: a writer killed with SIGKILL and rerun, and several writers filling one set.

The writer runs in a child interpreter started from a small script written to tmp_path; the
script imports cafe_core and these test helpers exactly as a job would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import core_shards as cs
import pytest

from cafe_core import ShardSet, ShardWriter, TripleReader
from cafe_core.layout import LOCK_NAME
from cafe_core.lock import WriterLockedError, pid_alive, read_holder
from cafe_core.validate import validate_set

TESTS = Path(__file__).resolve().parents[1]
NUM_INPUTS = 60
MAX_SAMPLES = 7

WRITE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time

    import core_shards as cs
    from cafe_core import ShardSet

    root, mode = sys.argv[1], sys.argv[2]
    sleep_s = float(os.environ.get("CAFE_TEST_SLEEP_S", "0"))
    pause_at = int(os.environ.get("CAFE_TEST_PAUSE_AT_STATS", "0"))
    if pause_at:
        # Hold the writer still just before it writes the pause_at-th stats.json, i.e. after
        # that shard's tar and status table have their final names, so the kill lands there.
        import cafe_core.writer as writer_module

        real_atomic_write = writer_module.atomic_write
        calls = []

        def pausing_atomic_write(path, *args, **kwargs):
            calls.append(path)
            if len(calls) == pause_at:
                print(f"pausing before {path.name}", flush=True)
                time.sleep(600)
            return real_atomic_write(path, *args, **kwargs)

        writer_module.atomic_write = pausing_atomic_write

    with ShardSet(root).writer(mode=mode, max_samples=int(sys.argv[3])) as writer:
        for i, (status, triples) in enumerate(cs.rich_inputs(int(sys.argv[4]))):
            writer.add(status, triples)
            print(f"added {i}", flush=True)
            time.sleep(sleep_s)
    print("closed", flush=True)
    """
)

WORKER_SCRIPT = textwrap.dedent(
    """
    import sys

    import core_shards as cs
    from cafe_core import ShardWriter

    root, rank, world, count, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    with ShardWriter(root, first_shard=rank, shard_stride=world, max_samples=5, lock_token=token) as writer:
        for i, (status, triples) in enumerate(cs.rich_inputs(count)):
            if i % world == rank:
                writer.add(status, triples)
    print("worker done", rank, flush=True)
    """
)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(TESTS), str(TESTS / "core")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def script(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    if not path.exists():
        path.write_text(text)
    return path


def run_to_completion(directory: Path, root: Path, mode: str) -> None:
    path = script(directory, "write_set.py", WRITE_SCRIPT)
    args = [sys.executable, str(path), str(root), mode, str(MAX_SAMPLES), str(NUM_INPUTS)]
    done = subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "closed"


def kill_midway(directory: Path, root: Path, until: str, **env: str) -> list[str]:
    """Run the writer until it prints a line starting with `until`, then SIGKILL it."""
    path = script(directory, "write_set.py", WRITE_SCRIPT)
    args = [sys.executable, str(path), str(root), "overwrite", str(MAX_SAMPLES), str(NUM_INPUTS)]
    proc = subprocess.Popen(args, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line.strip())
            if line.startswith(until):
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=60)
    assert seen and seen[-1].startswith(until), f"the writer ended before {until!r}: {seen[-3:]} {stderr}"
    assert proc.returncode == -signal.SIGKILL
    return seen


def status_summary(root: Path) -> list[tuple]:
    return [(r["shard"], r["input_key"], r["status"], r["reason"], r["sample_keys"]) for r in cs.status_rows(root)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("uninterrupted")
    root = directory / "set"
    run_to_completion(directory, root, "overwrite")
    return root


def test_uninterrupted_reference_run(uninterrupted):
    report = validate_set(uninterrupted)
    assert report.ok, report.problems
    expected = [t.key for _, triples in cs.rich_inputs(NUM_INPUTS) for t in triples]
    assert cs.all_keys(uninterrupted) == expected
    assert len(cs.status_rows(uninterrupted)) == NUM_INPUTS
    assert len(cs.tars(uninterrupted)) >= 8


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("until", "env"),
    [
        ("added 30", {"CAFE_TEST_SLEEP_S": "0.02"}),  # mid-shard, its tar a hidden temporary
        ("added 1", {"CAFE_TEST_SLEEP_S": "0.02"}),  # before any shard is done
        ("added 59", {"CAFE_TEST_SLEEP_S": "0.02"}),  # every input added, the last shard open
        ("pausing", {"CAFE_TEST_PAUSE_AT_STATS": "3"}),  # shard 2's tar renamed in, no stats.json
    ],
    ids=["mid-shard", "first-shard", "last-shard", "before-stats"],
)
def test_sigkill_then_incremental_rerun_equals_uninterrupted_run(tmp_path, uninterrupted, until, env):
    root = tmp_path / "set"
    kill_midway(tmp_path, root, until, **env)

    # The crash left something unfinished, and no index: the set is visibly open.
    leftovers = cs.hidden_temporaries(root) + cs.unfinished_tars(root)
    assert leftovers
    assert not (root / "shardindex.json").exists()
    done_before = {p.name: cs.md5(p) for p in cs.tars(root) if p not in leftovers}
    if until.startswith("added"):
        # Killed between adds: the open shard's tar exists only under its hidden temporary name.
        assert any(".tar." in p.name for p in cs.hidden_temporaries(root))
    if until == "pausing":
        assert [p.name for p in cs.unfinished_tars(root)] == ["shard-000002.tar"]
        assert (root / "shard-000002.status.parquet").is_file()
        assert len(done_before) == 2
    assert len(done_before) < len(cs.tars(uninterrupted))
    if cs.tars(root):
        assert not validate_set(root).ok
    else:  # killed before its first shard: only a hidden temporary, not yet a set
        with pytest.raises(FileNotFoundError, match="no shards here"):
            validate_set(root)

    run_to_completion(tmp_path, root, "incremental")

    assert cs.tar_md5s(root) == cs.tar_md5s(uninterrupted)
    for name, digest in done_before.items():
        assert cs.md5(root / name) == digest
    assert cs.all_keys(root) == cs.all_keys(uninterrupted)
    assert status_summary(root) == status_summary(uninterrupted)
    assert cs.hidden_temporaries(root) == []
    assert cs.unfinished_tars(root) == []
    report = validate_set(root)
    assert report.ok, report.problems
    assert report.num_samples == len(cs.all_keys(uninterrupted))


@pytest.mark.timeout(180)
def test_two_processes_fill_one_set(tmp_path):
    root = tmp_path / "set"
    count, world = 40, 2
    path = script(tmp_path, "worker.py", WORKER_SCRIPT)
    shard_set = ShardSet(root)  # the driver: holds the set's lock while its workers write, with its token
    assert shard_set.prepare("overwrite") == 0
    procs = [
        subprocess.Popen(
            [sys.executable, str(path), str(root), str(rank), str(world), str(count), shard_set.lock_token],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(world)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    shard_set.close(fsync=False)
    shard_set.release()

    inputs = cs.rich_inputs(count)
    expected = sorted(t.key for _, triples in inputs for t in triples)
    keys = cs.all_keys(root)
    assert sorted(keys) == expected  # every key exactly once
    rows = cs.status_rows(root)
    assert sorted(r["input_key"] for r in rows) == sorted(s.input_key for s, _ in inputs)
    for row in rows:
        number = int(row["shard"].rsplit("-", 1)[1])
        index = int(row["input_key"].rsplit("-", 1)[1].split(".")[0])
        assert number % world == index % world  # writer r owns shards r, r + W, ...
    report = validate_set(root)
    assert report.ok, report.problems
    assert report.num_samples == len(expected)
    assert len(list(TripleReader(root, on_error="raise"))) == len(expected)


def start_writer(directory: Path, root: Path, **env: str) -> subprocess.Popen:
    """The writer script in a child, writing slowly, once it has added its first input (so it holds the set)."""
    path = script(directory, "write_set.py", WRITE_SCRIPT)
    args = [sys.executable, str(path), str(root), "overwrite", str(MAX_SAMPLES), str(NUM_INPUTS)]
    proc = subprocess.Popen(args, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("added 0"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


@pytest.mark.timeout(180)
def test_a_second_writer_is_refused_naming_the_first_which_finishes_a_valid_set(tmp_path, uninterrupted):
    root = tmp_path / "set"
    first = start_writer(tmp_path, root, CAFE_TEST_SLEEP_S="0.05")
    try:
        holder = read_holder(root)
        assert holder is not None and holder.held and holder.pid == first.pid
        who = f"pid {first.pid} on host {socket.gethostname()}"
        # Through the Python API, in this process: the whole-set writer, a bare shard writer, a close.
        with pytest.raises(WriterLockedError, match=who):
            cs.write_set(root, cs.simple_inputs(3))
        with pytest.raises(WriterLockedError, match=who):
            ShardWriter(root)
        with pytest.raises(WriterLockedError, match=who):
            ShardSet(root).close(fsync=False)
        # ... and in another process, as a second job would.
        second = subprocess.run(
            [sys.executable, str(script(tmp_path, "write_set.py", WRITE_SCRIPT)), str(root), "overwrite", "7", "5"],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert "WriterLockedError" in second.stderr and who in second.stderr and "wait for it" in second.stderr
        writing = validate_set(root).codes()  # the open set is reported as being written, not as damaged
        assert writing.get("set.writing") == 1 and "set.temporary" not in writing
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert out.splitlines()[-1] == "closed"
    report = validate_set(root)
    assert report.ok, report.problems
    assert cs.tar_md5s(root) == cs.tar_md5s(uninterrupted)  # the first writer's set, whole
    assert not (root / LOCK_NAME).exists()  # released at the end


@pytest.mark.timeout(180)
def test_a_lock_left_by_a_sigkilled_writer_is_taken_by_the_next(tmp_path, uninterrupted, caplog):
    root = tmp_path / "set"
    seen = kill_midway(tmp_path, root, "added 30", CAFE_TEST_SLEEP_S="0.02")
    assert seen
    stale = read_holder(root)
    assert stale is not None and not stale.held  # the file is left, the kernel dropped the lock
    assert stale.job == "shard-writer" and not pid_alive(stale.pid)

    with caplog.at_level("WARNING", logger="cafe_core.lock"):
        lock = ShardSet(root).lock()
    assert lock.previous is not None and lock.previous.pid == stale.pid
    assert f"stale lock of pid {stale.pid}" in caplog.text
    lock.release()

    run_to_completion(tmp_path, root, "incremental")
    assert cs.tar_md5s(root) == cs.tar_md5s(uninterrupted)
    assert validate_set(root).ok
    assert not (root / LOCK_NAME).exists()


WRONG_TOKEN_SCRIPT = textwrap.dedent(
    """
    import sys

    from cafe_core import ShardWriter
    from cafe_core.lock import WriterLockedError

    for token in (None, "not-the-job-token"):
        try:
            ShardWriter(sys.argv[1], lock_token=token)
        except WriterLockedError as exc:
            print("refused", exc, flush=True)
    """
)


@pytest.mark.timeout(120)
def test_a_worker_needs_its_drivers_token(tmp_path):
    root = tmp_path / "set"
    with ShardSet(root) as shard_set:
        shard_set.prepare("overwrite", job="my-job")
        token = shard_set.lock_token
        path = script(tmp_path, "wrong_token.py", WRONG_TOKEN_SCRIPT)
        done = subprocess.run([sys.executable, str(path), str(root)], env=child_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        refusals = done.stdout.splitlines()
        assert len(refusals) == 2
        assert all(f"pid {os.getpid()}" in line and "my-job" in line for line in refusals)
    # Released: a worker of a driver that ended is told so, not let in.
    with pytest.raises(RuntimeError, match="not held"):
        ShardWriter(root, lock_token=token)
