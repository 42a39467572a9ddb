"""Load a trained run for generation: its latest checkpoint's weights on top of the preset it was trained from.

    pipeline, checkpoint = load_trained_pipeline("runs/tiny")                          # the latest checkpoint
    pipeline, checkpoint = load_trained_pipeline("runs/tiny/checkpoints/step-000020")  # one checkpoint
    images = pipeline(reference, "a photo of the dog on a beach", num_steps=30, seed=0)

Reads only the checkpoint folder's files: `config.json` (the run's config; its `preset` names the base
models) and the trainable weights, `ema.safetensors` (the run's exponential moving average, when it kept
one) or else `trainable.safetensors`. The folder layout is `cafe_train.checkpoint`'s
(`RUN/checkpoints/step-NNNNNN/`, complete once renamed into place); its names are defined here, where
both sides can import them (cafe_model sits below cafe_train).

`find_checkpoint` imports neither torch nor diffusers (seconds of start-up), so a command can reject a
folder without checkpoints at once; the loaders import them when called.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

    from cafe_model.customization_model import CustomizationModel
    from cafe_model.pipeline import CustomizationPipeline

CHECKPOINTS_DIR = "checkpoints"
STEP_PATTERN = re.compile(r"^step-(\d{6,})$")
TRAINABLE_NAME = "trainable.safetensors"
EMA_NAME = "ema.safetensors"
CONFIG_NAME = "config.json"

WeightChoice = Literal["auto", "ema", "trainable"]
WEIGHT_CHOICES: tuple[str, ...] = ("auto", "ema", "trainable")


@dataclass(frozen=True)
class TrainedCheckpoint:
    """One checkpoint of a run, as generation sees it."""

    path: Path
    step: int
    preset: str
    weights_path: Path
    config: dict[str, Any]

    @property
    def uses_ema(self) -> bool:
        return self.weights_path.name == EMA_NAME


def _step_of(folder: Path) -> int | None:
    match = STEP_PATTERN.match(folder.name)
    return int(match.group(1)) if match and folder.is_dir() else None


def find_checkpoint(path: str | Path, *, weights: WeightChoice = "auto") -> TrainedCheckpoint:
    """The checkpoint at `path`: a run folder (its latest `checkpoints/step-*`) or one `step-*` folder.

    weights: "auto" takes `ema.safetensors` when the checkpoint has it, else `trainable.safetensors`;
    "ema" and "trainable" insist on that file.
    Raises FileNotFoundError for a missing folder, a run without checkpoints or a missing weights file,
    ValueError for a config.json without a preset or an unknown `weights`.
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights={weights!r}: must be one of {', '.join(WEIGHT_CHOICES)}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder (give a run folder that `cafe train run --output` wrote)")
    step = _step_of(path)
    if step is None:
        root = path / CHECKPOINTS_DIR
        found = sorted((s, p) for p in root.iterdir() if (s := _step_of(p)) is not None) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(
                f"{path}: no checkpoints (no {CHECKPOINTS_DIR}/step-NNNNNN folders in it); train first with "
                f"`cafe train run --shards DIR --output {path}`, or give one checkpoint folder"
            )
        step, path = found[-1]
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: {CONFIG_NAME} is missing, so its preset is unknown")
    config = json.loads(config_path.read_text())
    preset = config.get("preset")
    if not isinstance(preset, str) or not preset:
        raise ValueError(f"checkpoint {path}: {CONFIG_NAME} names no preset (key 'preset')")
    ema, trainable = path / EMA_NAME, path / TRAINABLE_NAME
    chosen = ema if weights == "ema" or (weights == "auto" and ema.is_file()) else trainable
    if not chosen.is_file():
        raise FileNotFoundError(f"checkpoint {path}: {chosen.name} is missing")
    return TrainedCheckpoint(path=path, step=step, preset=preset, weights_path=chosen, config=config)


def load_trained_model(
    path: str | Path,
    *,
    weights: WeightChoice = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[CustomizationModel, TrainedCheckpoint]:
    """The run's preset (`load_model`) with the checkpoint's trained weights loaded, in eval mode.

    dtype: the models' dtype (default float32).
    `cache_dir` is the model cache for random presets (default `$CAFE_MODEL_CACHE`); random presets are
    built with a fixed seed, so any cache gives the base the run was trained on.
    Raises what `find_checkpoint` and `load_model` raise, and ValueError when the weights do not fit the preset.
    """
    import torch
    from safetensors.torch import load_file

    from cafe_model.load import load_model

    checkpoint = find_checkpoint(path, weights=weights)
    dtype = torch.float32 if dtype is None else dtype
    model = load_model(checkpoint.preset, device=device, dtype=dtype, cache_dir=cache_dir)
    state = load_file(checkpoint.weights_path)
    try:
        model.load_trainable_state_dict(state)  # copy_ casts to the model's dtype
    except ValueError as exc:
        raise ValueError(f"checkpoint {checkpoint.path}: {checkpoint.weights_path.name}: {exc}") from exc
    model.eval()
    return model, checkpoint


def load_trained_pipeline(
    path: str | Path,
    *,
    weights: WeightChoice = "auto",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[CustomizationPipeline, TrainedCheckpoint]:
    """A `CustomizationPipeline` (DDIM sampler) around `load_trained_model(path, ...)`."""
    from cafe_model.pipeline import CustomizationPipeline

    model, checkpoint = load_trained_model(path, weights=weights, device=device, dtype=dtype, cache_dir=cache_dir)
    return CustomizationPipeline(model), checkpoint
