"""Each gate turns away what it should, with its reason code, and passes a good subject."""

from __future__ import annotations

import numpy as np
import pytest

from cafe_vision.gates import GateConfig, Gates, image_side_ok, largest_component_fraction


def square_mask(size: int = 100, lo: int = 30, hi: int = 70) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


def run(config: GateConfig | None = None, **overrides):
    candidate = {
        "image_size": (100, 100),
        "box_xyxy": (30.0, 30.0, 70.0, 70.0),
        "box_score": 0.8,
        "mask": square_mask(),
        "mask_iou": 0.9,
        "num_instances": 1,
    }
    candidate.update(overrides)
    return Gates(config or GateConfig())(**candidate)


def test_a_good_subject_passes_every_gate() -> None:
    outcome = run()
    assert outcome.ok and outcome.reason is None
    assert outcome.passed == ("image_side", "box_score", "box_side", "mask_iou", "mask_area", "connectivity")
    assert outcome.measures["mask_area"] == pytest.approx(0.16)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"box_score": 0.1}, "gate.box_score"),
        ({"box_xyxy": (30.0, 30.0, 35.0, 70.0)}, "gate.box_side"),
        ({"mask_iou": 0.2}, "gate.mask_iou"),
        ({"mask": square_mask(lo=49, hi=54)}, "gate.mask_area"),  # 0.25 % of the image
        ({"mask": square_mask(lo=5, hi=95)}, "gate.mask_area"),  # 81 %
        ({"image_size": (40, 100)}, "gate.image_side"),
    ],
)
def test_each_gate_has_its_reason(overrides: dict, reason: str) -> None:
    outcome = run(**overrides)
    assert not outcome.ok
    assert outcome.reason == reason
    assert outcome.detail  # says the measured value against the threshold


def test_connectivity_refuses_scattered_fragments() -> None:
    mask = np.zeros((100, 100), dtype=bool)
    mask[10:30, 10:30] = True  # 400 px
    mask[60:80, 60:80] = True  # 400 px: the largest piece is half the mask
    assert largest_component_fraction(mask) == pytest.approx(0.5)
    assert run(mask=mask).reason == "gate.connectivity"


def test_exactly_one_instance_is_optional() -> None:
    assert run(num_instances=3).ok
    assert run(GateConfig(exactly_one_instance=True), num_instances=3).reason == "gate.instances"


def test_a_gate_set_to_none_is_off() -> None:
    assert run(GateConfig(min_box_score=None), box_score=0.01).ok


def test_image_side_gate_alone() -> None:
    assert image_side_ok((1, 1), GateConfig()).reason == "gate.image_side"
    assert image_side_ok((640, 480), GateConfig()).ok


@pytest.mark.parametrize(
    "kwargs",
    [{"min_box_score": 1.5}, {"mask_area_range": (0.5, 0.1)}, {"min_image_side_px": 0}, {"min_mask_iou": -0.1}],
)
def test_bad_thresholds_fail_on_construction(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="gates\\."):
        GateConfig(**kwargs)
