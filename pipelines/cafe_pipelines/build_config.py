"""Typed configuration of the build-triples job, its recipes, and YAML / `--set` overrides.

config = build_recipe("tiny", input="photos/", output="out/triples")
config = apply_overrides(config, load_yaml("job.yaml"))            # --config job.yaml (cafe_core.settings)
config = apply_overrides(config, parse_sets(["gates.min_box_score=0.3"]))   # --set ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cafe_core.layout import check_prefix
from cafe_core.shardset import parse_mode
from cafe_pipelines.decoding import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE_PX
from cafe_vision.compose import DEFAULT_MARGIN
from cafe_vision.gates import GateConfig
from cafe_vision.presets import get_preset

MODEL_DTYPES = ("float32", "float16", "bfloat16")
Config = TypeVar("Config")


@dataclass(frozen=True)
class StageResources:
    """What one stage asks of Ray: per actor (or task) CPUs and GPUs, rows per batch, actors."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 8
    concurrency: int = 1

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"resources: num_cpus and num_gpus must be >= 0, got {self.num_cpus}, {self.num_gpus}")
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError(
                f"resources: batch_size and concurrency must be >= 1, got {self.batch_size}, {self.concurrency}"
            )


def _cpu_stage() -> StageResources:
    return StageResources(num_cpus=0.25, batch_size=16)


def _model_stage() -> StageResources:
    return StageResources(num_cpus=0.5, batch_size=8)


@dataclass(frozen=True)
class Resources:
    """Per-stage resources. The defaults add up to 2 CPUs, so the whole pipeline fits a
    2-core machine with one actor per stage; on GPUs set e.g. resources.segment.num_gpus=1."""

    decode: StageResources = field(default_factory=_cpu_stage)
    caption: StageResources = field(default_factory=_model_stage)
    ground: StageResources = field(default_factory=_model_stage)
    segment: StageResources = field(default_factory=_model_stage)
    compose: StageResources = field(default_factory=_cpu_stage)


@dataclass(frozen=True)
class BuildConfig:
    """The whole build job. `input`, `output` and `preset` have no defaults: a job names them."""

    input: str
    output: str
    preset: str
    mode: str = "incremental"
    prefix: str = "shard"
    inputs_per_shard: int = 256
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side_px: int = DEFAULT_MAX_SIDE_PX
    device: str = "cpu"
    dtype: str = "float32"  # the models' weights and activations: float32, float16 or bfloat16 (GPUs: float16)
    caption_max_new_tokens: int | None = None
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    nms_iou_threshold: float = 0.5
    require_subject_phrase: bool = True
    max_phrases: int = 4
    sam_checkpoint: str | None = None
    min_hole_area_px: int = 64
    min_island_area_px: int = 64
    reference_margin: float = DEFAULT_MARGIN
    gates: GateConfig = field(default_factory=GateConfig)
    resources: Resources = field(default_factory=Resources)
    # Object-store memory Ray Data may fill with rows waiting between stages. None: sized from
    # the batch sizes and max_side_px (a few batches per actor). Without a bound Ray Data lets
    # the fast decode stage run ahead up to half the object store, so memory grows with the input.
    buffer_mb: int | None = None

    def __post_init__(self) -> None:
        get_preset(self.preset)  # an unknown preset fails here, listing the known ones
        parse_mode(self.mode)
        check_prefix(self.prefix)
        if not self.input or not self.output:
            raise ValueError("input and output are required (--input SRC --output DIR)")
        if self.inputs_per_shard < 1:
            raise ValueError(f"inputs_per_shard: {self.inputs_per_shard} must be >= 1")
        if self.buffer_mb is not None and self.buffer_mb < 1:
            raise ValueError(f"buffer_mb: {self.buffer_mb} must be >= 1 (or unset, to size it from the batches)")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(MODEL_DTYPES)}")
        if self.max_side_px < 32:
            raise ValueError(f"max_side_px: {self.max_side_px} must be >= 32")
        for name in ("box_threshold", "text_threshold", "nms_iou_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: {getattr(self, name)} is outside [0, 1]")


def build_recipe(preset: str, *, input: str, output: str, **overrides: Any) -> BuildConfig:
    """The settings that suit a preset. Random `tiny`/`medium` models give meaningless scores and
    phrases, so their recipe accepts any box and mask that is not degenerate; real presets keep
    the default gates."""
    if preset in ("tiny", "medium"):
        lenient = GateConfig(
            min_box_score=None,
            mask_area_range=(0.001, 0.999),
            min_largest_component=None,
            min_box_side_fraction=0.02,
            min_mask_iou=None,
        )
        base = BuildConfig(
            input=input,
            output=output,
            preset=preset,
            box_threshold=0.0,
            text_threshold=0.0,
            require_subject_phrase=False,
            min_hole_area_px=0,
            min_island_area_px=0,
            gates=lenient,
            max_side_px=512,
        )
    else:
        base = BuildConfig(input=input, output=output, preset=preset)
    return apply_overrides(base, overrides)


def _replace(obj: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"{where}{name}: unknown setting; known: {', '.join(sorted(known))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _replace(current, value, f"{where}{name}.")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[name] = value
    try:
        return dataclasses.replace(obj, **changes)
    except TypeError as exc:
        raise ValueError(f"{where.rstrip('.') or 'config'}: {exc}") from exc


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """`config` (any job's frozen dataclass) with nested `overrides` ({"gates": {"min_box_score": 0.3}})
    applied and validated; ValueError names an unknown setting or a bad value."""
    return _replace(config, overrides, "") if overrides else config


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
