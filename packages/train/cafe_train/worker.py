"""One training process: read a config JSON (or YAML) and run `train` on it.

    python -m cafe_train.worker RUN/train-config.json                       # one process
    accelerate launch --num_processes 2 --multi_gpu -m cafe_train.worker RUN/train-config.json

Launchers (`cafe_train.launch_accelerate`) write the config with `config_io.write_config` and start
this module once per process; accelerate's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) tells
each process its place, and `train` resumes from the run folder's latest checkpoint if there is one.
Exits 0 when the run reached `max_steps`; an exception exits non-zero with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from cafe_model.presets import get_preset
from cafe_train.config import TrainConfig
from cafe_train.config_io import load_train_config
from cafe_train.loop import TrainResult, train

logger = logging.getLogger("cafe_train.worker")


def prebuild_random_models(config: TrainConfig) -> None:
    """Build the preset's random models into the model cache now, before any process group exists.

    Once torch.distributed is initialized, transformers' `save_pretrained` silently writes nothing on
    ranks other than 0, so a random model first built inside a launched rank > 0 can land in the cache
    with an empty text encoder, for every later run. Built here, every process writes whole copies (one
    rename wins, see `cafe_vision.model_cache`). A no-op for hub presets and for models already cached.
    """
    preset = get_preset(config.preset)
    preset.base_source(cache_dir=config.model_cache_dir)
    preset.reference_encoder_source(cache_dir=config.model_cache_dir)


def run_worker(config_path: str | Path) -> TrainResult:
    """Load the config at `config_path` (validated again here, in this process) and train on it."""
    config = load_train_config(config_path)
    prebuild_random_models(config)  # before `train` starts the process group
    return train(config)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: `python -m cafe_train.worker CONFIG`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m cafe_train.worker", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a TrainConfig as JSON or YAML (what config_io.write_config writes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run_worker(args.config)
    if dist.is_initialized():
        # Explicitly, so torch does not warn at exit that the group was never destroyed.
        dist.destroy_process_group()
    logger.info(
        "rank %s: trained steps %d..%d of %s; last checkpoint %s",
        os.environ.get("RANK", "0"),
        result.first_step + 1,
        result.last_step,
        result.run_dir,
        result.last_checkpoint,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
