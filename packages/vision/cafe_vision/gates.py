"""Quality gates on a grounded, segmented subject; each failure has a reason code.

A candidate that fails a gate is not a training triple: the reason lands in the input's
status row (`skipped`, `gate.<name>`) so a run report can say why inputs were turned away.
Gates run cheapest first and stop at the first failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class GateConfig:
    """Thresholds; `None` turns a gate off.

    min_box_score: the grounder's confidence in the subject box.
    mask_area_range: the mask's share of the image, (min, max); the default keeps subjects
        that are neither specks nor the whole frame.
    min_largest_component: the largest connected piece's share of the mask (one object, not
        scattered fragments).
    min_box_side_fraction: the box's shorter side against the image's shorter side.
    min_mask_iou: the segmenter's own predicted IoU for the mask.
    exactly_one_instance: refuse images where the grounder found the subject more than once
        (the reference would be ambiguous).
    min_image_side_px: the image's shorter side.
    """

    min_box_score: float | None = 0.35
    mask_area_range: tuple[float, float] | None = (0.01, 0.64)
    min_largest_component: float | None = 0.9
    min_box_side_fraction: float | None = 0.1
    min_mask_iou: float | None = 0.5
    exactly_one_instance: bool = False
    min_image_side_px: int | None = 64

    def __post_init__(self) -> None:
        for name in ("min_box_score", "min_largest_component", "min_box_side_fraction", "min_mask_iou"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"gates.{name}: {value} is outside [0, 1]")
        if self.mask_area_range is not None:
            low, high = self.mask_area_range
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"gates.mask_area_range: {self.mask_area_range} must satisfy 0 <= min < max <= 1")
        if self.min_image_side_px is not None and self.min_image_side_px < 1:
            raise ValueError(f"gates.min_image_side_px: {self.min_image_side_px} must be >= 1")


@dataclass(frozen=True)
class GateOutcome:
    passed: tuple[str, ...]  # gate names passed, in order
    reason: str | None  # `gate.<name>` of the first failure; None when all passed
    detail: str = ""  # the measured value against the threshold, for the status row's error text
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reason is None


def image_side_ok(image_size: tuple[int, int], config: GateConfig) -> GateOutcome:
    """The image-size gate alone: it runs before any model, on the decoded size."""
    if config.min_image_side_px is not None and min(image_size) < config.min_image_side_px:
        detail = f"shorter side {min(image_size)} px < {config.min_image_side_px} px"
        return GateOutcome((), "gate.image_side", detail)
    return GateOutcome(("image_side",) if config.min_image_side_px is not None else (), None)


def largest_component_fraction(mask: np.ndarray) -> float:
    labels, count = ndimage.label(mask)
    if count == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(sizes.max() / sizes.sum())


class Gates:
    """Callable: apply every configured gate to one candidate subject."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config

    def __call__(
        self,
        *,
        image_size: tuple[int, int],
        box_xyxy: tuple[float, float, float, float],
        box_score: float,
        mask: np.ndarray,
        mask_iou: float,
        num_instances: int,
    ) -> GateOutcome:
        c = self.config
        passed: list[str] = []
        measures: dict[str, float] = {}

        def fail(name: str, detail: str) -> GateOutcome:
            return GateOutcome(tuple(passed), f"gate.{name}", detail, measures)

        outcome = image_side_ok(image_size, c)
        if not outcome.ok:
            return outcome
        passed.extend(outcome.passed)
        measures["box"] = float(box_score)
        if c.min_box_score is not None:
            if box_score < c.min_box_score:
                return fail("box_score", f"box score {box_score:.3f} < {c.min_box_score}")
            passed.append("box_score")
        width, height = image_size
        x0, y0, x1, y1 = box_xyxy
        side_fraction = min((x1 - x0) / width, (y1 - y0) / height)
        measures["box_side"] = float(side_fraction)
        if c.min_box_side_fraction is not None:
            if side_fraction < c.min_box_side_fraction:
                return fail("box_side", f"box side {side_fraction:.1%} of the image < {c.min_box_side_fraction:.0%}")
            passed.append("box_side")
        if c.exactly_one_instance:
            if num_instances != 1:
                return fail("instances", f"{num_instances} instances of the subject found, want exactly 1")
            passed.append("instances")
        measures["mask_iou"] = float(mask_iou)
        if c.min_mask_iou is not None:
            if mask_iou < c.min_mask_iou:
                return fail("mask_iou", f"predicted mask IoU {mask_iou:.3f} < {c.min_mask_iou}")
            passed.append("mask_iou")
        area = float(mask.mean())
        measures["mask_area"] = area
        if c.mask_area_range is not None:
            low, high = c.mask_area_range
            if not low <= area <= high:
                return fail("mask_area", f"mask covers {area:.1%} of the image, outside {low:.0%}-{high:.0%}")
            passed.append("mask_area")
        component = largest_component_fraction(mask)
        measures["largest_component"] = component
        if c.min_largest_component is not None:
            if component < c.min_largest_component:
                return fail(
                    "connectivity", f"largest piece is {component:.1%} of the mask < {c.min_largest_component:.0%}"
                )
            passed.append("connectivity")
        return GateOutcome(tuple(passed), None, "", measures)
