"""Typed configuration of a self-improvement round, its recipes, and YAML / `--set` overrides.

config = improve_recipe("tiny", checkpoint="runs/tiny", shards=["out/triples"], output="out/round-1")
config = apply_overrides(config, load_yaml("round.yaml"))                 # --config round.yaml
config = apply_overrides(config, parse_sets(["filter.min_dino=0.6"]))     # --set ...

`apply_overrides` is the build job's (cafe_pipelines.build_config), and works on any job config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cafe_core.apart import check_output_apart
from cafe_core.layout import check_prefix
from cafe_core.shardset import WriteMode, parse_mode
from cafe_pipelines.build_config import MODEL_DTYPES, StageResources, apply_overrides, config_dict
from cafe_pipelines.dedupe import DedupeConfig
from cafe_pipelines.filtering import FilterConfig
from cafe_vision.scorer_presets import get_scorer_preset

WEIGHT_CHOICES = ("auto", "ema", "trainable")  # cafe_model.trained's, repeated so the config loads no model code
ROUND_MODES = (WriteMode.INCREMENTAL, WriteMode.OVERWRITE)
SIZE_MULTIPLE_PX = 8  # cafe_model.pipeline's rule (the VAE's scale), repeated for the same reason

__all__ = ["ImproveConfig", "ImproveResources", "apply_overrides", "config_dict", "improve_recipe"]


def _generate_stage() -> StageResources:
    return StageResources(num_cpus=1.0, batch_size=1)


def _score_stage() -> StageResources:
    return StageResources(num_cpus=1.0, batch_size=4)


@dataclass(frozen=True)
class ImproveResources:
    """Per-stage resources; batch_size counts references (a row holds a reference and all its pairs). The
    defaults fill 2 CPUs with one actor per stage; on GPUs set e.g. resources.generate.num_gpus=1 and
    resources.generate.concurrency=N."""

    generate: StageResources = field(default_factory=_generate_stage)
    score: StageResources = field(default_factory=_score_stage)


@dataclass(frozen=True)
class ImproveConfig:
    """One round. `checkpoint`, `shards`, `output` and `preset` have no defaults: a round names them.

    checkpoint: a run folder (its latest checkpoint, resolved once when the round starts) or one
        `checkpoints/step-NNNNNN` folder.
    shards: the input shard sets (closed sets of round k; real data is round 0). Never written.
    output: the new set (round k+1); never one of `shards`, nor inside or around one.
    preset: the scorer preset (`tiny`, `base`, `toy`); the generator's preset is the checkpoint's.
    num_references: at most this many references, picked by a seeded hash of their keys (None: all).
    prompts_per_reference, candidates_per_pair: pairs per reference, images generated per pair.
    size_px: generated images' side (None: the checkpoint's training resolution).
    references_per_shard: the references whose candidates make one output shard: the unit of resume, and
        the candidates the filter's percentile floors are taken over.
    score_batch_size: candidates per scorer step (a reference's candidates are scored together, in steps
        of this many).
    num_examples: accepted and rejected candidates each, kept for report/examples.png.
    """

    checkpoint: str
    shards: tuple[str, ...]
    output: str
    preset: str
    mode: str = "incremental"
    prefix: str = "shard"
    weights: str = "auto"
    num_references: int | None = None
    prompts_per_reference: int = 4
    candidates_per_pair: int = 4
    num_steps: int = 30
    text_guidance: float = 7.5
    reference_guidance: float = 7.5
    reference_scale: float = 1.0
    negative_prompt: str = ""
    size_px: int | None = None
    seed: int = 0
    references_per_shard: int = 16
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    device: str = "cpu"
    dtype: str = "float32"
    model_cache_dir: str | None = None
    score_batch_size: int = 16
    num_examples: int = 8
    resources: ImproveResources = field(default_factory=ImproveResources)
    buffer_mb: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.shards, str | Path):
            object.__setattr__(self, "shards", (str(self.shards),))
        object.__setattr__(self, "shards", tuple(str(s) for s in self.shards))
        if not self.checkpoint:
            raise ValueError("checkpoint is required (--checkpoint RUN)")
        if not self.shards or not all(self.shards):
            raise ValueError("shards: give at least one input shard set (--shards DIR)")
        if not self.output:
            raise ValueError("output is required (--output DIR)")
        get_scorer_preset(self.preset)  # an unknown preset fails here, listing the known ones
        if parse_mode(self.mode) not in ROUND_MODES:
            raise ValueError(f"mode: {self.mode!r}; a round writes one whole set: use incremental or overwrite")
        check_prefix(self.prefix)
        if self.weights not in WEIGHT_CHOICES:
            raise ValueError(f"weights: {self.weights!r} is not one of {', '.join(WEIGHT_CHOICES)}")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(MODEL_DTYPES)}")
        for name in (
            "prompts_per_reference",
            "candidates_per_pair",
            "num_steps",
            "references_per_shard",
            "score_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {value!r} must be an integer >= 1")
        if self.num_references is not None and (not isinstance(self.num_references, int) or self.num_references < 1):
            raise ValueError(f"num_references: {self.num_references!r} must be an integer >= 1 (or unset for all)")
        if not isinstance(self.num_examples, int) or self.num_examples < 0:
            raise ValueError(f"num_examples: {self.num_examples!r} must be an integer >= 0")
        if self.size_px is not None and (
            not isinstance(self.size_px, int) or self.size_px < SIZE_MULTIPLE_PX or self.size_px % SIZE_MULTIPLE_PX
        ):
            raise ValueError(f"size_px: {self.size_px!r} must be a positive multiple of {SIZE_MULTIPLE_PX}")
        if self.buffer_mb is not None and self.buffer_mb < 1:
            raise ValueError(f"buffer_mb: {self.buffer_mb} must be >= 1 (or unset, to size it from the batches)")
        check_output_apart(self.output, self.shards, "input set")


# What `improve_recipe` sets over ImproveConfig's defaults, per scorer preset (its docstring says why).
_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "prompts_per_reference": 2,
        "candidates_per_pair": 2,
        "num_steps": 4,
        "references_per_shard": 4,
        "filter": FilterConfig(
            min_dino=None,
            min_clip_i=None,
            min_clip_t=None,
            dino_percentile=50.0,
            max_copy_paste=0.9,
            exactly_one_instance=False,
        ),
        "dedupe": DedupeConfig(sha256=True, max_cosine=0.99),
    },
    "toy": {
        "prompts_per_reference": 4,
        "candidates_per_pair": 2,
        "num_steps": 20,
        "references_per_shard": 16,
        "filter": FilterConfig(
            min_dino=1.0, min_clip_i=None, min_clip_t=100.0, max_copy_paste=None, exactly_one_instance=True
        ),
        "dedupe": DedupeConfig(sha256=True, max_cosine=0.995),
    },
}


def improve_recipe(
    preset: str, *, checkpoint: str, shards: list[str] | tuple[str, ...], output: str, **overrides: Any
) -> ImproveConfig:
    """The settings that suit a scorer preset.

    `tiny`: random scorers, whose scores mean nothing, so no absolute floors: the filter keeps the
    upper half of each class's DINO scores (per shard) and drops pasted copies (that score is
    pixel-based, so it means something even here); random grounders find many boxes, so the
    instance count is not checked. Few steps and candidates, so a round runs in seconds on a CPU.
    `toy`: the toy scorers' readings are exact, so the floors are all-or-nothing: every attribute of the
    subject read as in the reference (dino 1) and the scene as the prompt names it (clip_t 100), exactly
    one object. No copy-paste check: a solid subject re-drawn well is pixel for pixel its reference, and
    that is success here, not a paste. Near duplicates are those above 0.995 (two renderings of one
    subject in one scene score about 0.975). 20 DDIM steps: the toy model is sampled at that in `cafe toy`.
    Real presets keep FilterConfig's absolute floors.
    """
    base = ImproveConfig(
        checkpoint=checkpoint, shards=tuple(shards), output=output, preset=preset, **_RECIPES.get(preset, {})
    )
    return apply_overrides(base, overrides)
