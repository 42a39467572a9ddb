"""Typed configuration of the build-triples job, its recipes, and YAML / `--set` overrides.

config = build_recipe("tiny", input="photos/", output="out/triples")
config = apply_overrides(config, load_yaml("job.yaml"))            # --config job.yaml (cafe_core.settings)
config = apply_overrides(config, parse_sets(["gates.min_box_score=0.3"]))   # --set ...
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from cafe_core.apart import OutputInsideInput, check_output_apart
from cafe_core.layout import check_prefix
from cafe_core.shardset import parse_mode
from cafe_pipelines.decoding import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE_PX
from cafe_pipelines.sources import paths_kept_apart
from cafe_vision.compose import DEFAULT_MARGIN
from cafe_vision.gates import GateConfig
from cafe_vision.presets import get_preset

MODEL_DTYPES = ("float32", "float16", "bfloat16")
MIN_MAX_PIXELS = 32 * 32  # max_side_px's floor, squared: a smaller limit refuses every usable image
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
    """The whole build job. `input`, `output` and `preset` have no defaults: a job names them.

    input_roots: the folders a manifest's paths (and tar shards) must resolve inside; empty: the
        manifest's own folder (cafe_pipelines.sources). The training service passes its data roots.
    allow_outside_root: read a manifest's paths wherever they lead (a manifest the user trusts);
        never set by the service.
    The output may not be, lie inside or hold the input (its folder, its manifest and, with no
    roots given, the manifest's folder, its tars): a build never writes into its photos.
    """

    input: str
    output: str
    preset: str
    input_roots: tuple[str, ...] = ()
    allow_outside_root: bool = False
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
        roots = (self.input_roots,) if isinstance(self.input_roots, str | Path) else self.input_roots
        object.__setattr__(self, "input_roots", tuple(str(root) for root in roots))
        if not isinstance(self.allow_outside_root, bool):
            raise ValueError(f"allow_outside_root: {self.allow_outside_root!r} is not true or false")
        for root in self.input_roots:
            if not Path(root).expanduser().is_dir():
                raise ValueError(f"input_roots: {root} is not an existing folder (--input-root takes a folder)")
        if self.allow_outside_root and self.input_roots:
            raise ValueError(
                "allow_outside_root: give --input-root DIR (inputs held to those roots) or --allow-outside-root "
                "(held to none), not both"
            )
        for what, path, hint in paths_kept_apart(self.input, self.input_roots, self.allow_outside_root):
            try:
                check_output_apart(self.output, [path], what)
            except OutputInsideInput as exc:
                raise OutputInsideInput(f"{exc} ({hint})" if hint else str(exc)) from None
        if self.inputs_per_shard < 1:
            raise ValueError(f"inputs_per_shard: {self.inputs_per_shard} must be >= 1")
        if self.buffer_mb is not None and self.buffer_mb < 1:
            raise ValueError(f"buffer_mb: {self.buffer_mb} must be >= 1 (or unset, to size it from the batches)")
        if self.dtype not in MODEL_DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(MODEL_DTYPES)}")
        if self.max_side_px < 32:
            raise ValueError(f"max_side_px: {self.max_side_px} must be >= 32 (the default is {DEFAULT_MAX_SIDE_PX})")
        if self.max_pixels < MIN_MAX_PIXELS:
            raise ValueError(
                f"max_pixels: {self.max_pixels} must be >= {MIN_MAX_PIXELS} (32 x 32); a smaller limit refuses "
                f"every image as decode.too_many_pixels (the default is {DEFAULT_MAX_PIXELS:,})"
            )
        if self.caption_max_new_tokens is not None and self.caption_max_new_tokens < 1:
            raise ValueError(f"caption_max_new_tokens: {self.caption_max_new_tokens} must be >= 1 (or unset)")
        if self.max_phrases < 1:
            raise ValueError(f"max_phrases: {self.max_phrases} must be >= 1")
        for name in ("min_hole_area_px", "min_island_area_px", "reference_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 0")
        for name in ("box_threshold", "text_threshold", "nms_iou_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: {getattr(self, name)} is outside [0, 1]")


def build_recipe(preset: str, *, input: str, output: str, **overrides: Any) -> BuildConfig:
    """The settings that suit a preset. Random `tiny`/`medium` models give meaningless scores and
    phrases, so their recipe accepts any box and mask that is not degenerate; real presets keep
    the default gates."""
    # Where the inputs may lie decides what the output must keep apart from: set with the input.
    where = {name: overrides.pop(name) for name in ("input_roots", "allow_outside_root") if name in overrides}
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
            **where,
            box_threshold=0.0,
            text_threshold=0.0,
            require_subject_phrase=False,
            min_hole_area_px=0,
            min_island_area_px=0,
            gates=lenient,
            max_side_px=512,
        )
    else:
        base = BuildConfig(input=input, output=output, preset=preset, **where)
    return apply_overrides(base, overrides)


def _describe(hint: Any) -> str:
    """A type annotation in the words of a `--set` value: "a number or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        if len(set(args)) == 1:
            return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} ({', '.join(_describe(arg) for arg in args)})"
    words = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


class _WrongType(Exception):
    pass


def _typed(value: Any, hint: Any) -> Any:
    """`value` as the annotation `hint` takes it (an int for a float, a list for a tuple), or _WrongType.

    YAML and `--set` give str, int, float, bool, None, lists and mappings; annotations this does not
    know are left to the config's own validation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _typed(value, arg)
                except _WrongType:
                    continue
        raise _WrongType
    if origin is Literal:
        if value in args:
            return value
        raise _WrongType
    if origin is tuple:
        if isinstance(value, str) and args == (str, Ellipsis):
            return (value,)  # one path where a list of paths goes
        if not isinstance(value, list | tuple):
            raise _WrongType
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(item, args[0]) for item in value)
        if args and len(value) != len(args):
            raise _WrongType
        return tuple(_typed(item, arg) for item, arg in zip(value, args, strict=False)) if args else tuple(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _WrongType
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _WrongType
    if hint is str:
        if isinstance(value, str):
            return value
        raise _WrongType
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise _WrongType
    return value


def _hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(type(obj))
    except (NameError, TypeError):  # an annotation that does not resolve at run time: no type checks
        return {}


def _replace(obj: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(obj)}
    hints = _hints(obj)
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise ValueError(f"{where}{name}: unknown setting; known: {', '.join(sorted(known))}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _replace(current, value, f"{where}{name}.")
        elif dataclasses.is_dataclass(current) and not dataclasses.is_dataclass(value):
            first = dataclasses.fields(current)[0].name
            raise ValueError(
                f"{where}{name}: {value!r} is not a mapping of its settings; set them one by one, "
                f"e.g. --set {where}{name}.{first}=..."
            )
        elif name in hints:
            try:
                value = _typed(value, hints[name])
            except _WrongType:
                quote = " (quote it to keep it as text)" if hints[name] is str and _is_scalar(value) else ""
                raise ValueError(
                    f"{where}{name}: {value!r} is not {_describe(hints[name])}{quote}; it is {current!r} now"
                ) from None
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[name] = value
    try:
        return dataclasses.replace(obj, **changes)
    except TypeError as exc:
        raise ValueError(f"{where.rstrip('.') or 'config'}: {exc}") from exc


def _is_scalar(value: Any) -> bool:
    return isinstance(value, int | float | bool)


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """`config` (any job's frozen dataclass) with nested `overrides` ({"gates": {"min_box_score": 0.3}})
    applied and validated; ValueError names an unknown setting, a value of the wrong type (with the
    type the setting takes) or a bad value."""
    return _replace(config, overrides, "") if overrides else config


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
