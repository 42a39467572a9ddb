"""One trainer per run folder, and what killed checkpoint saves leave behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config

from cafe_core.layout import LOCK_NAME
from cafe_core.lock import WriterLockedError, read_holder
from cafe_train.checkpoint import TrainingState, list_checkpoints, save_checkpoint
from cafe_train.config_io import write_config
from cafe_train.launch_accelerate import CONFIG_NAME, launch_accelerate
from cafe_train.loop import train


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


@pytest.mark.timeout(300)
def test_a_second_trainer_into_one_run_is_refused_naming_the_first(
    tmp_path: Path, four_triples: Path, model_cache: Path
) -> None:
    run_dir = tmp_path / "run"
    long_run = tiny_config(four_triples, run_dir, model_cache, max_steps=100_000, checkpoint_every=100_000)
    config_path = write_config(long_run, tmp_path / "long.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-m", "cafe_train.worker", str(config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while (holder := read_holder(run_dir)) is None or not holder.held:
            assert first.poll() is None, f"the first trainer ended: {first.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the first trainer never took the run's lock"
            time.sleep(0.05)
        assert (holder.pid, holder.job) == (first.pid, "training")

        second = tiny_config(four_triples, run_dir, model_cache, max_steps=2)
        who = f"{run_dir} is being written by pid {first.pid} on host {socket.gethostname()} \\(training, since"
        with pytest.raises(WriterLockedError, match=who):
            train(second)
        # a launcher is refused before it writes its train-config.json into the run
        with pytest.raises(WriterLockedError, match=who):
            launch_accelerate(second, num_workers=1, cpu=True)
        assert not (run_dir / CONFIG_NAME).exists()
        assert first.poll() is None  # the first trains on, untouched

        # SIGKILLed, it leaves its lock file; the next trainer takes it and runs.
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        assert (run_dir / LOCK_NAME).exists() and not read_holder(run_dir).held
        result = train(second)
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert result.last_step == 2 and [p.name for p in list_checkpoints(run_dir)] == ["step-000002"]
    assert not (run_dir / LOCK_NAME).exists()


def save(run_dir: Path, step: int, stale_before: float | None = None) -> Path:
    layer = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    state = TrainingState(step=step, epoch=0, batches_done=step, rank_rngs=[])
    trainable = {name: p.detach() for name, p in layer.named_parameters()}
    return save_checkpoint(
        run_dir, trainable=trainable, optimizer=optimizer, scheduler=scheduler, state=state, stale_before=stale_before
    )


def test_a_save_removes_temporaries_of_dead_saves_and_keeps_a_live_ones(tmp_path: Path) -> None:
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    dead = root / f".step-000005.{dead_pid()}.tmp"  # a save SIGKILLed mid-write
    dead_restore = root / f".step-000003.restore-{dead_pid()}.tmp"  # a Ray restore killed mid-copy
    live_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = root / f".step-000007.{live_process.pid}.tmp"
        for temp in (dead, dead_restore, live):
            temp.mkdir()
            (temp / "trainable.safetensors").write_bytes(b"partial")
        uncommitted = root / f".step-000009.uncommitted-{dead_pid()}"  # kept on purpose by launch_ray
        uncommitted.mkdir()

        save(tmp_path / "run", 10)
        assert not dead.exists() and not dead_restore.exists()
        assert live.is_dir() and uncommitted.is_dir()

        # A live pid's temporary from before the saver took the run's lock is dead too (reused pid).
        os.utime(live, (1_000_000_000, 1_000_000_000))
        save(tmp_path / "run", 20, stale_before=time.time())
        assert not live.exists() and uncommitted.is_dir()
    finally:
        live_process.kill()
        live_process.wait()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-000010", "step-000020"]
