"""The typed training config: every knob of `cafe_train.loop.train`, validated on construction.

    config = TrainConfig(shards=["out/triples"], output_dir="runs/tiny", preset="tiny", max_steps=100)

Required fields (shards, output_dir, preset) have no defaults. A bad value raises ValueError naming
it and what is allowed; a missing shard folder raises FileNotFoundError. The run folder must be a folder
(or not exist yet) and stay apart from every shard set: not one, not inside one, not holding one
(`cafe_core.apart.OutputInsideInput`, a ValueError). `check_shards` (run by `train` before it loads
anything) also validates each set with `cafe_core.validate.validate_set(fast=True)`, which checks that every
shard has its tar, status table and stats file on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cafe_core.apart import check_output_apart
from cafe_core.keys import check_key
from cafe_core.validate import validate_set
from cafe_model.presets import get_preset

MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULES = ("constant", "cosine")
MAX_PROBLEMS_SHOWN = 3


@dataclass
class TrainConfig:
    """What one training run does. Steps count optimizer steps (each `grad_accum_steps` micro-batches)."""

    shards: list[Path]
    output_dir: Path
    preset: str
    # The training mix: one weight per entry of `shards`, e.g. [3, 1] for real:generated = 3:1. A set's
    # share of the samples drawn is its weight over the sum (samples within a set equally likely); None =
    # every shard equally likely, whatever set it is in (one set, or sets to be pooled).
    shard_weights: list[float] | None = None
    # The training side in pixels; None = the preset's own (`ModelPreset.resolution_px`: 64 for tiny, 512 for sd15).
    resolution_px: int | None = None
    batch_size: int = 4
    max_steps: int = 1000
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    prompt_dropout: float = 0.05
    reference_dropout: float = 0.05
    mask_loss_weight: float = 1.0
    # Min-SNR-gamma loss weighting (Hang et al. 2023); None = every timestep weighs 1. 5 is the paper's value.
    min_snr_gamma: float | None = None
    # EMA of the trainable parameters, updated after every optimizer step; None = no EMA. E.g. 0.999.
    ema_decay: float | None = None
    shuffle_buffer: int = 1000
    num_workers: int = 2
    epoch_samples: int | None = None
    excluded_keys: list[str] = field(default_factory=list)
    augment_reference: bool = True
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 1
    # Validation grids (RUN/validation/step-NNNNNN.png): None = never. References are the first
    # `validation_samples` unflagged triples of the first shard set, each generated
    # `validation_images_per_reference` times in `validation_steps` DDIM steps at resolution_px.
    validate_every: int | None = None
    validation_samples: int = 2
    validation_images_per_reference: int = 2
    validation_steps: int = 10
    mixed_precision: str = "no"
    model_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.shards, str | Path):
            self.shards = [self.shards]
        self.shards = [Path(s) for s in self.shards]
        self.output_dir = Path(self.output_dir)
        if self.model_cache_dir is not None:
            self.model_cache_dir = Path(self.model_cache_dir)
        self.excluded_keys = list(self.excluded_keys)
        for key in self.excluded_keys:
            check_key(key)  # ValueError naming a malformed key
        if not self.shards:
            raise ValueError("shards: give at least one shard set folder")
        if self.shard_weights is not None:
            self.shard_weights = _check_shard_weights(self.shard_weights, len(self.shards))
        preset = get_preset(self.preset)  # ValueError listing the known presets
        if self.resolution_px is None:
            self.resolution_px = preset.resolution_px
        if not isinstance(self.resolution_px, int) or self.resolution_px < 8 or self.resolution_px % 8:
            raise ValueError(
                f"resolution_px={self.resolution_px!r}: must be a positive multiple of 8 (SD's VAE halves it 3 times),"
                f" e.g. {max(8, (int(self.resolution_px) // 8) * 8)}"
            )
        _at_least("batch_size", self.batch_size, 1)
        _at_least("max_steps", self.max_steps, 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("grad_accum_steps", self.grad_accum_steps, 1)
        _at_least("num_workers", self.num_workers, 0)
        _at_least("shuffle_buffer", self.shuffle_buffer, 0)
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        _at_least("keep_checkpoints", self.keep_checkpoints, 1)
        _at_least("log_every", self.log_every, 1)
        if self.epoch_samples is not None:
            _at_least("epoch_samples", self.epoch_samples, 1)
        if self.validate_every is not None:
            _at_least("validate_every", self.validate_every, 1)
        _at_least("validation_samples", self.validation_samples, 1)
        _at_least("validation_images_per_reference", self.validation_images_per_reference, 1)
        _at_least("validation_steps", self.validation_steps, 1)
        if self.ema_decay is not None and not (_is_number(self.ema_decay) and 0.0 < self.ema_decay < 1.0):
            raise ValueError(
                f"ema_decay={self.ema_decay!r}: must be a number in (0, 1), e.g. 0.999, or None for no EMA"
            )
        gamma = self.min_snr_gamma
        if gamma is not None and not (_is_number(gamma) and 0 < gamma < math.inf):
            raise ValueError(
                f"min_snr_gamma={gamma!r}: must be a finite number > 0, e.g. 5.0 (Hang et al.),"
                " or None to weigh every timestep 1"
            )
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r}: must be > 0")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r}: must be >= 0")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm!r}: must be > 0")
        if self.mask_loss_weight < 0:
            raise ValueError(f"mask_loss_weight={self.mask_loss_weight!r}: must be >= 0 (1 = unweighted loss)")
        for name in ("prompt_dropout", "reference_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r}: must be a probability in [0, 1]")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}: must be one of {', '.join(LR_SCHEDULES)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision={self.mixed_precision!r}: must be one of {', '.join(MIXED_PRECISION)}")
        for root in self.shards:
            if not root.is_dir():
                raise FileNotFoundError(f"shard set {str(root)!r}: no such folder (give the folder a data build wrote)")
        _check_run_folder(self.output_dir)
        # A run written into a set it reads would mix checkpoints into the set's folder (and its files
        # into the training stream of the next run that reads the set).
        check_output_apart(self.output_dir, self.shards, "shard set")


def _check_run_folder(output_dir: Path) -> None:
    """ValueError when `output_dir`, or the nearest of its parents that exists, is not a folder.

    Checked with the config, so a run into a file fails before a model loads, not when the run
    folder is first made."""
    for path in (output_dir, *output_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "it" if path == output_dir else f"its parent {path}"
                raise ValueError(
                    f"output_dir {str(output_dir)!r}: {where} is a file, not a folder; give a folder for the"
                    " run (a new one, or a run folder to resume)"
                )
            return


def _check_shard_weights(weights: object, num_sets: int) -> list[float]:
    if isinstance(weights, str) or not isinstance(weights, Sequence):
        raise ValueError(f"shard_weights={weights!r}: must be a list of numbers, one per shard set, e.g. [3, 1]")
    if len(weights) != num_sets:
        raise ValueError(
            f"shard_weights={list(weights)!r}: {len(weights)} weight(s) for {num_sets} shard set(s);"
            " give one weight per entry of shards, in the same order"
        )
    if not all(_is_number(w) and 0 <= w < math.inf for w in weights):
        raise ValueError(f"shard_weights={list(weights)!r}: every weight must be a finite number >= 0")
    if not sum(weights) > 0:
        raise ValueError(f"shard_weights={list(weights)!r}: the weights must not all be 0 (nothing to draw)")
    return [float(w) for w in weights]


def _at_least(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")


def _is_number(value: object) -> bool:
    # bool is an int; a YAML `true` is not a decay. NaN fails every comparison, so the callers' ranges refuse it.
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_shards(dirs: Sequence[str | Path]) -> int:
    """Check every shard set folder exists and passes fast validation; returns their total sample count.

    Raises FileNotFoundError for a missing folder and ValueError naming the set and its first problems
    for a set that fails `validate_set(dir, fast=True)` or holds no samples.
    """
    total = 0
    for root in map(Path, dirs):
        if not root.is_dir():
            raise FileNotFoundError(f"shard set {str(root)!r}: no such folder (give the folder a data build wrote)")
        try:
            report = validate_set(root, fast=True)
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"shard set {str(root)!r} is not a readable shard set: {exc}") from exc
        if not report.ok:
            shown = "; ".join(str(p) for p in report.problems[:MAX_PROBLEMS_SHOWN])
            more = len(report.problems) - MAX_PROBLEMS_SHOWN
            raise ValueError(
                f"shard set {str(root)!r} fails validation ({len(report.problems)} problem(s): {shown}"
                f"{f'; and {more} more' if more > 0 else ''}); run `cafe shards validate {root}` for the full report"
            )
        if report.num_samples == 0:
            raise ValueError(f"shard set {str(root)!r} holds no samples (or no shardindex.json: was it closed?)")
        total += report.num_samples
    return total
