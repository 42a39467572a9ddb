"""The launchers: accelerate DDP over gloo on CPU, Ray Train workers reporting checkpoints, recovery of a killed worker.

Each slow test starts real processes (2 accelerate processes, 2 Ray Train workers); most of their time is
those processes importing torch and diffusers, so the runs are a few steps of the tiny preset at 32 px.
"""

from __future__ import annotations

import itertools
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.train import Checkpoint
from safetensors.torch import load_file
from train_helpers import write_shard_set

from cafe_core import resolve_shards
from cafe_train import TrainConfig
from cafe_train.checkpoint import TRAINABLE_NAME, list_checkpoints
from cafe_train.launch_accelerate import CONFIG_NAME, accelerate_command, launch_accelerate
from cafe_train.launch_ray import KILL_AT_STEP_ENV_VAR, launch_ray, prepare_resume, ray_run_name
from cafe_train.loader import EpochResampledShards
from cafe_train.rank_record import RECORD_RANKS_ENV_VAR, RankRecorder, read_rank_records, tensor_sha256

MAX_STEPS = 4
CHECKPOINT_EVERY = 2
NUM_RANKS = 2


@pytest.fixture(scope="module")
def eight_triples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 triples in 4 shards of 2: with batches of 2 and no shuffling, each batch is one shard draw."""
    return write_shard_set(tmp_path_factory.mktemp("eight") / "set", range(8))


def launch_config(shards: Path, run_dir: Path, model_cache: Path, **overrides) -> TrainConfig:
    options = {
        "resolution_px": 32,
        "batch_size": 2,
        "num_workers": 0,
        "shuffle_buffer": 0,
        "max_steps": MAX_STEPS,
        "checkpoint_every": CHECKPOINT_EVERY,
        "keep_checkpoints": 3,
        "model_cache_dir": model_cache,
        **overrides,
    }
    return TrainConfig(shards=[shards], output_dir=run_dir, preset="tiny", **options)


def logged_losses(run_dir: Path) -> dict[int, float]:
    """Step -> loss from RUN/metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


def shard_keys(tar_path: Path) -> list[str]:
    """The sample keys of one shard, in tar order."""
    with tarfile.open(tar_path) as tar:
        return list(dict.fromkeys(name.split(".", 1)[0] for name in tar.getnames()))


def checksum_of(checkpoint_dir: Path) -> dict[str, str]:
    tensors = load_file(checkpoint_dir / TRAINABLE_NAME)
    return {name: tensor_sha256(tensors[name]) for name in sorted(tensors)}


# --- fast: command lines, rank records, restoring a Ray checkpoint ---------------------------------------------


def test_accelerate_command_picks_the_launcher(tmp_path: Path) -> None:
    config_path = tmp_path / CONFIG_NAME
    two_cpu = accelerate_command(config_path, 2, accelerate_config=None, cpu=True)
    # N > 1 CPU processes go through torchrun (--multi_gpu); --cpu would start a single process.
    assert "--multi_gpu" in two_cpu and "--cpu" not in two_cpu
    assert two_cpu[-3:] == ["-m", "cafe_train.worker", str(config_path)]
    one_cpu = accelerate_command(config_path, 1, accelerate_config=None, cpu=True)
    assert "--cpu" in one_cpu and "--multi_gpu" not in one_cpu
    one_gpu = accelerate_command(config_path, 1, accelerate_config=None, cpu=False)
    assert "--cpu" not in one_gpu and "--multi_gpu" not in one_gpu
    file = tmp_path / "multinode.yaml"
    from_file = accelerate_command(config_path, 16, accelerate_config=file, cpu=False, mixed_precision="bf16")
    assert from_file[from_file.index("--config_file") + 1] == str(file)
    assert from_file[from_file.index("--num_processes") + 1] == "16"
    assert "--multi_gpu" not in from_file and "--num_machines" not in from_file  # the file decides those
    assert from_file[from_file.index("--mixed_precision") + 1] == "bf16"


def test_launchers_reject_bad_worker_counts(tmp_path: Path, four_triples: Path) -> None:
    config = launch_config(four_triples, tmp_path / "run", tmp_path)
    with pytest.raises(ValueError, match="num_workers=0"):
        launch_accelerate(config, 0)
    with pytest.raises(FileNotFoundError, match="accelerate config"):
        launch_accelerate(config, 2, accelerate_config=tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="num_workers=0"):
        launch_ray(config, 0)


def test_rank_recorder_writes_keys_and_checksums_only_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = {"b": torch.ones(2, dtype=torch.bfloat16), "a": torch.arange(3.0)}
    monkeypatch.delenv(RECORD_RANKS_ENV_VAR, raising=False)
    off = RankRecorder.from_env(tmp_path, 0, 2)
    off.saw(["k1"])
    assert off.write(0, 1, tensors) is None and read_rank_records(tmp_path) == []
    monkeypatch.setenv(RECORD_RANKS_ENV_VAR, "1")
    on = RankRecorder.from_env(tmp_path, 1, 2)
    on.saw(["k1", "k2"])
    on.saw(["k3"])
    assert on.write(3, 5, tensors) == tmp_path / "ranks" / "rank-1.json"
    (record,) = read_rank_records(tmp_path)
    assert (record["rank"], record["world_size"], record["first_step"], record["last_step"]) == (1, 2, 3, 5)
    assert record["keys"] == ["k1", "k2", "k3"]
    assert list(record["tensors_sha256"]) == ["a", "b"]
    assert tensor_sha256(torch.arange(3.0)) == record["tensors_sha256"]["a"]
    assert tensor_sha256(torch.arange(3.0) + 1e-6) != record["tensors_sha256"]["a"]


def _fake_checkpoint(root: Path, step: int) -> Path:
    folder = root / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / TRAINABLE_NAME).write_text(f"step {step}")
    return folder


def test_prepare_resume_restores_rays_checkpoint_and_hides_newer_local_ones(tmp_path: Path) -> None:
    persisted = _fake_checkpoint(tmp_path / "ray_storage" / "run", 4)  # what Ray committed last
    run_dir = tmp_path / "run"
    assert prepare_resume(run_dir, None) is None and not run_dir.exists()  # a first start: nothing to do
    restored = prepare_resume(run_dir, Checkpoint.from_directory(persisted))
    assert restored == run_dir / "checkpoints" / "step-000004"
    assert (restored / TRAINABLE_NAME).read_text() == "step 4"
    assert prepare_resume(run_dir, Checkpoint.from_directory(persisted)) == restored  # again: unchanged
    _fake_checkpoint(run_dir / "checkpoints", 2)
    _fake_checkpoint(run_dir / "checkpoints", 6)  # saved, but the worker died before Ray committed it
    prepare_resume(run_dir, Checkpoint.from_directory(persisted))
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-000002", "step-000004"]
    hidden = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".step-000006.uncommitted")]
    assert len(hidden) == 1  # kept, out of the resume's way
    with pytest.raises(ValueError, match="not a cafe_train checkpoint"):
        prepare_resume(run_dir, Checkpoint.from_directory(tmp_path / "ray_storage"))


# --- slow: real processes ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_accelerate_two_cpu_processes_stay_in_step_on_their_own_draws(
    tmp_path: Path, eight_triples: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 processes under `accelerate launch`, gloo DDP: bit-identical weights, each rank its own shard draws."""
    monkeypatch.setenv(RECORD_RANKS_ENV_VAR, "1")
    config = launch_config(eight_triples, tmp_path / "run", model_cache)
    assert launch_accelerate(config, NUM_RANKS, cpu=True) == 0
    assert (tmp_path / "run" / CONFIG_NAME).is_file()
    assert sorted(logged_losses(config.output_dir)) == list(range(1, MAX_STEPS + 1))
    records = read_rank_records(config.output_dir)
    assert [(r["rank"], r["world_size"], r["last_step"]) for r in records] == [(0, 2, MAX_STEPS), (1, 2, MAX_STEPS)]
    # DDP averaged the gradients: both ranks end with the weights rank 0 saved, bit for bit.
    final = config.output_dir / "checkpoints" / f"step-{MAX_STEPS:06d}"
    assert records[0]["tensors_sha256"] == records[1]["tensors_sha256"] == checksum_of(final)
    # One shard stream per epoch, the same everywhere; wds.split_by_node deals rank r its positions
    # r, r + 2, ... (shards are drawn with replacement, so the ranks may still meet the same sample).
    urls = [str(p) for p in resolve_shards(config.shards)]
    batches_per_epoch = 8 // (config.batch_size * NUM_RANKS)
    for rank, record in enumerate(records):
        expected: list[str] = []
        for epoch in range(MAX_STEPS // batches_per_epoch):
            stream = EpochResampledShards(urls, config.seed)
            stream.epoch = epoch
            draws = [draw["url"] for draw in itertools.islice(stream, NUM_RANKS * batches_per_epoch)]
            expected += [key for url in draws[rank::NUM_RANKS] for key in shard_keys(Path(url))]
        assert record["keys"] == expected, f"rank {rank} did not read its own draws"
    assert records[0]["keys"] != records[1]["keys"]


@pytest.fixture(scope="module")
def ray_run(local_ray, eight_triples: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 2-worker Ray Train run (the reference for the recovery test)."""
    run_dir = tmp_path_factory.mktemp("ray") / "whole"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RECORD_RANKS_ENV_VAR, "1")
        result = launch_ray(launch_config(eight_triples, run_dir, model_cache), NUM_RANKS)
    return run_dir, result


@pytest.mark.slow
@pytest.mark.ray
def test_ray_two_workers_report_their_checkpoints(ray_run) -> None:
    run_dir, result = ray_run
    assert result.error is None
    assert result.metrics["step"] == MAX_STEPS and result.metrics["loss"] == logged_losses(run_dir)[MAX_STEPS]
    reported = [Path(checkpoint.path) for checkpoint, _ in result.best_checkpoints]
    assert [p.name for p in reported] == [f"step-{s:06d}" for s in range(CHECKPOINT_EVERY, MAX_STEPS + 1, 2)]
    last = Path(result.checkpoint.path)
    assert last.parent == run_dir / "ray" / ray_run_name(run_dir)  # default storage: RUN/ray/<run name>
    assert checksum_of(last) == checksum_of(run_dir / "checkpoints" / last.name)
    records = read_rank_records(run_dir)
    assert [r["world_size"] for r in records] == [NUM_RANKS] * NUM_RANKS  # accelerate adopted Ray's group
    assert records[0]["trainable_sha256"] == records[1]["trainable_sha256"]


@pytest.fixture
def kill_at_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(RECORD_RANKS_ENV_VAR, "1")
    monkeypatch.setenv(KILL_AT_STEP_ENV_VAR, str(CHECKPOINT_EVERY))  # rank 1 SIGKILLs itself after that report
    yield


@pytest.mark.slow
@pytest.mark.ray
def test_ray_worker_killed_mid_run_resumes_from_its_last_checkpoint(
    ray_run, kill_at_first_checkpoint, tmp_path: Path, eight_triples: Path, model_cache: Path
) -> None:
    whole_dir, _ = ray_run
    run_dir = tmp_path / "killed"
    result = launch_ray(launch_config(eight_triples, run_dir, model_cache), NUM_RANKS, max_failures=1)
    assert result.error is None and result.metrics["step"] == MAX_STEPS
    assert Path(result.checkpoint.path).name == f"step-{MAX_STEPS:06d}"
    assert (Path(result.checkpoint.path) / TRAINABLE_NAME).is_file()
    # The records are the last attempt's: both ranks started at the checkpoint, not at step 0.
    records = read_rank_records(run_dir)
    assert [(r["first_step"], r["last_step"]) for r in records] == [(CHECKPOINT_EVERY, MAX_STEPS)] * NUM_RANKS
    assert records[0]["trainable_sha256"] == records[1]["trainable_sha256"]
    killed, whole = logged_losses(run_dir), logged_losses(whole_dir)
    assert sorted(killed) == list(range(1, MAX_STEPS + 1))
    # Every rank's RNGs come back from the checkpoint with the weights, optimizer and data position,
    # so the resumed run logs the uninterrupted run's losses.
    np.testing.assert_allclose([killed[s] for s in sorted(killed)], [whole[s] for s in sorted(killed)], atol=1e-5)
