"""Reference composition: RGBA cut-out, alpha = mask, cropped to the box plus a margin."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cafe_vision.compose import box_from_mask, compose_reference, mask_image


def test_cut_out_carries_the_mask_as_alpha() -> None:
    rng = np.random.default_rng(0)
    target = Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((80, 120), dtype=bool)
    mask[20:60, 40:100] = True
    box = box_from_mask(mask)
    assert box == (40, 20, 100, 60)
    reference = compose_reference(target, mask, box, margin=0.1)
    assert reference.mode == "RGBA"
    assert reference.size == (72, 48)  # 60x40 box grown by 6 and 4 px on each side
    alpha = np.asarray(reference)[..., 3]
    assert alpha[0, 0] == 0 and alpha[24, 36] == 255
    # The opaque pixels are the target's pixels.
    assert np.array_equal(np.asarray(reference)[4:44, 6:66, :3], np.asarray(target)[20:60, 40:100])


def test_margin_is_clipped_to_the_image() -> None:
    target = Image.new("RGB", (50, 50), "white")
    mask = np.ones((50, 50), dtype=bool)
    assert compose_reference(target, mask, (0, 0, 50, 50), margin=0.5).size == (50, 50)


def test_bad_inputs_are_refused() -> None:
    target = Image.new("RGB", (50, 50))
    with pytest.raises(ValueError, match="mask shape"):
        compose_reference(target, np.ones((10, 10), dtype=bool), (0, 0, 10, 10))
    with pytest.raises(ValueError, match="mode"):
        compose_reference(target.convert("L"), np.ones((50, 50), dtype=bool), (0, 0, 10, 10))
    with pytest.raises(ValueError, match="empty"):
        box_from_mask(np.zeros((5, 5), dtype=bool))


def test_mask_image_is_mode_l_0_or_255() -> None:
    image = mask_image(np.eye(4, dtype=bool))
    assert image.mode == "L"
    assert set(np.unique(np.asarray(image))) == {0, 255}
