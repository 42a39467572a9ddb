"""Run `train` as N data-parallel Ray Train workers (TorchTrainer), restarted from the last checkpoint on failure.

    from cafe_train.launch_ray import launch_ray
    result = launch_ray(config, 2)                         # 2 CPU workers on a local Ray (or $RAY_ADDRESS)
    result = launch_ray(config, 8, use_gpu=True, storage_path=Path("/shared/ray_results"))
    result.checkpoint.path                                  # .../step-000100: trainable.safetensors, ...

Each worker runs `train(config, on_checkpoint=report)`; `report` calls `ray.train.report` on every
worker after each checkpoint ({"step", "loss", ...}; the checkpoint folder from the main process), so
Ray copies each checkpoint to `storage_path/<ray_run_name(RUN)>/step-NNNNNN` (default storage: `RUN/ray`)
and keeps the newest `keep_checkpoints` there.

The torch process group is Ray's: Ray Train starts it (gloo on CPU, NCCL on GPUs) and sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and ACCELERATE_TORCH_DEVICE; accelerate's `PartialState` finds
the group already initialized and adopts it. On CPU it only does so with `cpu=True` (here
`ACCELERATE_USE_CPU=true`): otherwise it sees no GPU and treats each worker as a lone process,
which would train N unsynchronized copies on the same data. The worker checks the sizes agree.

Recovery: with `max_failures` >= 1 a dead worker (or node) makes Ray restart the whole group; the
loop resumes from the latest checkpoint in `RUN/checkpoints`. Where RUN is not shared between nodes,
each worker first restores `ray.train.get_checkpoint()` (the last one Ray committed) into its
`RUN/checkpoints`, and hides newer local checkpoints Ray never committed, so every rank resumes from
the same step. Shards and the model cache must be readable by every worker.

Random presets are built into the model cache by this process before the workers start; on a cluster
whose nodes do not share the cache, build it on each node first (workers that build it themselves,
inside Ray's process group, cache a broken copy: see `worker.prebuild_random_models`).

Connects to `$RAY_ADDRESS` when set, else starts a local Ray (shut down again at the end). Environment
variables named `CAFE_*` (e.g. `CAFE_TRAIN_RECORD_RANKS`, `CAFE_MODEL_CACHE`) are passed on to the workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from accelerate import PartialState
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device

from cafe_core.local_ray import prepare_local_ray
from cafe_core.lock import refuse_if_held
from cafe_train.checkpoint import STEP_PATTERN, checkpoint_root, list_checkpoints
from cafe_train.config import TrainConfig
from cafe_train.config_io import config_from_dict, config_to_dict
from cafe_train.loop import train
from cafe_train.worker import prebuild_random_models

FORWARDED_ENV_PREFIX = "CAFE_"  # this project's settings: CAFE_TRAIN_*, CAFE_MODEL_CACHE
# Testing only: the highest world rank SIGKILLs itself right after its report of this step, to show
# that a worker dying mid-run is restarted and resumed. Resumed runs start past the step, so it fires once.
KILL_AT_STEP_ENV_VAR = "CAFE_TRAIN_TEST_KILL_AT_STEP"
RAY_STORAGE_DIR = "ray"
UNCOMMITTED_SUFFIX = ".uncommitted"


def launch_ray(
    config: TrainConfig,
    num_workers: int,
    *,
    use_gpu: bool = False,
    max_failures: int = 1,
    storage_path: Path | None = None,
) -> Result:
    """Train `config` on `num_workers` Ray Train workers; returns Ray's Result (its `checkpoint` is the last one).

    `max_failures`: how many worker-group failures to recover from (-1: any number). `storage_path`:
    where Ray keeps its copies of the checkpoints (default `RUN/ray`; give shared storage on a multi-node
    cluster). Raises Ray's TrainingFailedError when training fails more often than that.
    """
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ValueError(f"num_workers={num_workers!r}: must be an integer >= 1 (Ray Train workers)")
    refuse_if_held(config.output_dir)  # a run in progress: its rank 0 holds RUN's lock (cafe_train.loop)
    # Workers may start in another folder (or on another machine): give them absolute paths.
    config = dataclasses.replace(
        config,
        shards=[p.resolve() for p in config.shards],
        output_dir=config.output_dir.resolve(),
        model_cache_dir=config.model_cache_dir.resolve() if config.model_cache_dir is not None else None,
    )
    # Ray starts each worker's process group before the worker runs, and a random model built inside
    # a rank > 0 is broken (see prebuild_random_models); built here, workers sharing this cache find it.
    prebuild_random_models(config)
    storage = Path(storage_path).resolve() if storage_path is not None else config.output_dir / RAY_STORAGE_DIR
    started_ray = not ray.is_initialized()
    if started_ray:
        if not os.environ.get("RAY_ADDRESS"):
            prepare_local_ray()  # a new local Ray: 127.0.0.1 only, token on (cafe_core.local_ray)
        ray.init(address=os.environ.get("RAY_ADDRESS"))
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "config": config_to_dict(config),  # plain data: validated again on each worker
            "use_gpu": use_gpu,
            "env": {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV_PREFIX)},
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(
            name=ray_run_name(config.output_dir),
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
        ),
    )
    try:
        return trainer.fit()
    finally:
        if started_ray:
            ray.shutdown()


def ray_run_name(run_dir: Path) -> str:
    """Ray's name for the run in RUN: the folder's name and a hash of its absolute path.

    Stable, so a relaunch on the same folder finds Ray's record of it (and its last checkpoint) again;
    distinct, so two runs named alike in one shared storage_path never resume from each other's checkpoints.
    """
    absolute = Path(run_dir).resolve()
    return f"{absolute.name}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:8]}"


def _train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: adopt Ray's process group in accelerate, restore, train, report."""
    os.environ.update(loop_config["env"])
    config = config_from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    use_gpu = loop_config["use_gpu"]
    os.environ["ACCELERATE_USE_CPU"] = "false" if use_gpu else "true"  # see the module doc
    if use_gpu:
        # Ray names the device in ACCELERATE_TORCH_DEVICE; making it current keeps NCCL's own
        # buffers (barriers, broadcasts) off GPU 0.
        torch.cuda.set_device(get_device())
    state = PartialState(cpu=not use_gpu)
    if state.num_processes != world_size or state.process_index != rank:
        raise RuntimeError(
            f"accelerate sees process {state.process_index} of {state.num_processes}, Ray Train rank {rank} of"
            f" {world_size}: accelerate did not adopt Ray's process group (distributed_type={state.distributed_type})"
        )
    prepare_resume(config.output_dir, ray.train.get_checkpoint())
    kill_at_step = int(os.environ.get(KILL_AT_STEP_ENV_VAR, "0") or 0)

    def report(step: int, path: Path | None, metrics: dict[str, float]) -> None:
        checkpoint = Checkpoint.from_directory(path) if path is not None else None
        numbers = {name: float(value) for name, value in metrics.items() if isinstance(value, int | float)}
        # Every rank names the checkpoint (Ray takes rank 0's name): the step, as in RUN/checkpoints.
        ray.train.report({"step": step, **numbers}, checkpoint=checkpoint, checkpoint_dir_name=f"step-{step:06d}")
        if step == kill_at_step and rank == world_size - 1:
            os.kill(os.getpid(), signal.SIGKILL)

    train(config, on_checkpoint=report)


def prepare_resume(run_dir: str | Path, checkpoint: Checkpoint | None) -> Path | None:
    """Make `RUN/checkpoints` resume from Ray's last committed checkpoint; returns its local folder.

    Copies `checkpoint` (a `step-NNNNNN` folder Ray persisted) into `RUN/checkpoints` unless it is there,
    and renames local checkpoints of later steps to hidden `.step-NNNNNN.uncommitted-PID` folders (kept, not
    resumed from): ranks that do not share RUN would otherwise resume from different steps. With no
    checkpoint (a first start) it changes nothing. Safe to call from several workers on one folder.
    """
    if checkpoint is None:
        return None
    name = Path(checkpoint.path).name
    match = STEP_PATTERN.match(name)
    if match is None:
        raise ValueError(f"Ray checkpoint {checkpoint.path}: not a cafe_train checkpoint (a step-NNNNNN folder)")
    step = int(match.group(1))
    root = checkpoint_root(run_dir)
    for local in list_checkpoints(run_dir):
        if int(STEP_PATTERN.match(local.name).group(1)) > step:
            try:  # named by pid: workers beside this one may hide the same folder
                local.rename(root / f".{local.name}{UNCOMMITTED_SUFFIX}-{os.getpid()}")
            except OSError:
                if local.exists():  # not a worker beside this one renaming it first
                    raise
    final = root / name
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    # Into a temporary beside it, then renamed: a `step-*` folder is always complete (see checkpoint.py).
    temporary = root / f".{name}.restore-{os.getpid()}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    checkpoint.to_directory(str(temporary))
    try:
        temporary.rename(final)
    except OSError:
        if not final.is_dir():  # not a worker beside this one restoring it first
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return final
