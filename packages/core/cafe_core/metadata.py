"""The schema of `KEY.json`, the metadata of one triple.

A small hand-written checker rather than a JSON-Schema dependency: the rules are few, and the
messages name the field and what is allowed, which is what a user fixing a producer needs.

Required for every sample:
    schema_version  int, == SCHEMA_VERSION
    subject         non-empty str, the phrase the prompt names
    caption         str
    box_xyxy        4 numbers, x0 < x1, y0 < y1, pixels in target coordinates
    scores          {name: number}, e.g. box, mask_iou
    gates           [str], the gates the sample passed
    source          {uri: str, sha256: str, input_key: str}
    models          {role: {name: str, revision: str}}
    round           int >= 0; 0 = real data, k = self-improvement round k
Required when round > 0:
    generation      {checkpoint: str, seed: int, sampler: {...}}
Optional:
    quality         {name: number}, scores given to generated samples
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1

REQUIRED_FIELDS = (
    "schema_version",
    "subject",
    "caption",
    "box_xyxy",
    "scores",
    "gates",
    "source",
    "models",
    "round",
)
SOURCE_FIELDS = ("uri", "sha256", "input_key")
GENERATION_FIELDS = ("checkpoint", "seed", "sampler")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _score_map_problems(name: str, value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{name}: expected an object of name -> number, got {type(value).__name__}"]
    return [
        f"{name}.{k}: expected a finite number, got {v!r}"
        for k, v in value.items()
        if not (isinstance(k, str) and _is_number(v))
    ]


def metadata_problems(meta: Any, image_size: tuple[int, int] | None = None) -> list[str]:
    """Every way `meta` breaks the schema, as messages naming the field; empty when valid.

    `image_size` (width, height) of the target, when known, bounds `box_xyxy`.
    """
    if not isinstance(meta, Mapping):
        return [f"metadata: expected a JSON object, got {type(meta).__name__}"]
    problems = [f"{field}: missing (required by the data contract)" for field in REQUIRED_FIELDS if field not in meta]
    if problems:
        return problems

    version = meta["schema_version"]
    if version != SCHEMA_VERSION:
        problems.append(f"schema_version: {version!r} is not supported; this cafe reads {SCHEMA_VERSION}")
    if not isinstance(meta["subject"], str) or not meta["subject"].strip():
        problems.append("subject: expected a non-empty phrase naming the subject")
    if not isinstance(meta["caption"], str):
        problems.append(f"caption: expected a string, got {type(meta['caption']).__name__}")

    box = meta["box_xyxy"]
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(_is_number(v) for v in box)):
        problems.append(f"box_xyxy: expected 4 numbers [x0, y0, x1, y1], got {box!r}")
    else:
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            problems.append(f"box_xyxy: expected x0 < x1 and y0 < y1, got {list(box)}")
        if image_size is not None:
            width, height = image_size
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                problems.append(f"box_xyxy: {list(box)} lies outside the {width}x{height} target")

    problems += _score_map_problems("scores", meta["scores"])
    gates = meta["gates"]
    if not (isinstance(gates, list | tuple) and all(isinstance(g, str) for g in gates)):
        problems.append(f"gates: expected a list of gate names, got {gates!r}")

    source = meta["source"]
    if not isinstance(source, Mapping):
        problems.append("source: expected an object with uri, sha256, input_key")
    else:
        problems += [
            f"source.{f}: missing or not a string" for f in SOURCE_FIELDS if not isinstance(source.get(f), str)
        ]

    models = meta["models"]
    if not isinstance(models, Mapping):
        problems.append("models: expected an object of role -> {name, revision}")
    else:
        for role, model in models.items():
            if not (
                isinstance(model, Mapping)
                and isinstance(model.get("name"), str)
                and isinstance(model.get("revision"), str)
            ):
                problems.append(f"models.{role}: expected {{name: str, revision: str}}, got {model!r}")

    round_ = meta["round"]
    if not (_is_int(round_) and round_ >= 0):
        problems.append(f"round: expected an integer >= 0, got {round_!r}")
    elif round_ > 0:
        generation = meta.get("generation")
        if not isinstance(generation, Mapping):
            problems.append("generation: required for generated samples (round > 0): checkpoint, seed, sampler")
        else:
            problems += [f"generation.{f}: missing" for f in GENERATION_FIELDS if f not in generation]
            if "seed" in generation and not _is_int(generation["seed"]):
                problems.append(f"generation.seed: expected an integer, got {generation['seed']!r}")

    if "quality" in meta:
        problems += _score_map_problems("quality", meta["quality"])
    return problems
