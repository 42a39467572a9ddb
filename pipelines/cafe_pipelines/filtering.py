"""The quality filter of a self-improvement round: which scored candidates are good enough to train on.

Pure functions over score dicts (the keys of `cafe_vision.scorers.SCORE_NAMES`). A candidate is
checked in this order, and the first check it fails names its reason:

    filter.not_found   subject_found != 1 (or no box / mask came back)
    filter.instances   num_instances != 1, when exactly_one_instance
    filter.copy_paste  copy_paste > max_copy_paste (a pasted copy of the reference teaches nothing)
    filter.dino        dino below min_dino, or below its class's dino_percentile
    filter.clip_i      likewise for clip_i
    filter.clip_t      likewise for clip_t

A class is the subject phrase. Percentile floors are computed over the scores of the candidates
given in one call whose subject was found (the round passes one shard's candidates at a time, so a shard's decisions
depend on its own candidates only, and a resumed round decides exactly as an uninterrupted one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SIMILARITY_SCORES = ("dino", "clip_i", "clip_t")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds; None turns a check off. Absolute floors and per-class percentiles both apply when set.

    min_dino, min_clip_i: cosines in [-1, 1]; min_clip_t: CLIP-T in [0, 100].
    *_percentile: in [0, 100]; keep candidates at or above that percentile of their class's scores.
    max_copy_paste: in [0, 1]; candidates scoring above it are dropped.
    """

    min_dino: float | None = 0.5
    min_clip_i: float | None = 0.7
    min_clip_t: float | None = 25.0
    dino_percentile: float | None = None
    clip_i_percentile: float | None = None
    clip_t_percentile: float | None = None
    max_copy_paste: float | None = 0.9
    exactly_one_instance: bool = True

    def __post_init__(self) -> None:
        for name in SIMILARITY_SCORES:
            value = getattr(self, f"{name}_percentile")
            if value is not None and not 0.0 <= value <= 100.0:
                raise ValueError(f"filter.{name}_percentile: {value} is outside [0, 100]")
        for name, low, high in (("min_dino", -1.0, 1.0), ("min_clip_i", -1.0, 1.0), ("min_clip_t", 0.0, 100.0)):
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"filter.{name}: {value} is outside [{low:g}, {high:g}]")
        if self.max_copy_paste is not None and not 0.0 <= self.max_copy_paste <= 1.0:
            raise ValueError(f"filter.max_copy_paste: {self.max_copy_paste} is outside [0, 1]")


@dataclass(frozen=True)
class Verdict:
    """What the filter made of one candidate: accepted, or the reason code and a sentence saying why."""

    accepted: bool
    reason: str = ""
    detail: str = ""
    passed: tuple[str, ...] = ()


def _bad(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def class_floors(
    scores: Sequence[Mapping[str, float]], classes: Sequence[str], config: FilterConfig
) -> dict[tuple[str, str], float]:
    """(class, score name) -> the class's percentile floor, for each score with a percentile set.

    Over the candidates whose subject was found: the others' dino of 0.0 means "nothing to compare".
    """
    floors: dict[tuple[str, str], float] = {}
    for name in SIMILARITY_SCORES:
        percentile = getattr(config, f"{name}_percentile")
        if percentile is None:
            continue
        by_class: dict[str, list[float]] = {}
        for candidate, cls in zip(scores, classes, strict=True):
            value = candidate.get(name)
            if candidate.get("subject_found") == 1.0 and not _bad(value):
                by_class.setdefault(cls, []).append(float(value))
        for cls, values in by_class.items():
            floors[(cls, name)] = float(np.percentile(np.asarray(values, dtype=np.float64), percentile))
    return floors


def judge(
    scores: Mapping[str, float], cls: str, config: FilterConfig, floors: Mapping[tuple[str, str], float]
) -> Verdict:
    """The verdict on one candidate, given its class's percentile floors (`class_floors`)."""
    passed: list[str] = []
    if scores.get("subject_found") != 1.0:
        return Verdict(False, "filter.not_found", f"the subject {cls!r} was not found in the image")
    passed.append("subject_found")
    if config.exactly_one_instance:
        count = scores.get("num_instances")
        if count != 1.0:
            return Verdict(False, "filter.instances", f"{count} instances of {cls!r}, want exactly 1", tuple(passed))
        passed.append("instances")
    if config.max_copy_paste is not None:
        value = scores.get("copy_paste")
        if _bad(value) or value > config.max_copy_paste:
            return Verdict(
                False, "filter.copy_paste", f"copy_paste {value} above {config.max_copy_paste}", tuple(passed)
            )
        passed.append("copy_paste")
    for name in SIMILARITY_SCORES:
        value = scores.get(name)
        minimum = getattr(config, f"min_{name}")
        floor = floors.get((cls, name))
        if minimum is None and floor is None:
            continue
        if _bad(value):
            return Verdict(False, f"filter.{name}", f"{name} is missing or not finite ({value})", tuple(passed))
        if minimum is not None and value < minimum:
            return Verdict(False, f"filter.{name}", f"{name} {value:.4f} below min_{name} {minimum}", tuple(passed))
        if floor is not None and value < floor:
            percentile = getattr(config, f"{name}_percentile")
            detail = f"{name} {value:.4f} below the {percentile:g}th percentile of {cls!r} ({floor:.4f})"
            return Verdict(False, f"filter.{name}", detail, tuple(passed))
        passed.append(name)
    return Verdict(True, passed=tuple(passed))


def filter_candidates(
    scores: Sequence[Mapping[str, float]], classes: Sequence[str], config: FilterConfig
) -> list[Verdict]:
    """One verdict per candidate (`scores[i]` of a candidate of class `classes[i]`), in order."""
    floors = class_floors(scores, classes, config)
    return [judge(candidate, cls, config, floors) for candidate, cls in zip(scores, classes, strict=True)]
