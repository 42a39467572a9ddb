"""Cut-outs on a plain background: how the scorers show DINO and CLIP a subject without its surroundings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cafe_vision.compose import DEFAULT_MARGIN, compose_reference
from cafe_vision.images import to_rgb

# White, as the DreamBooth-style evaluations paste subjects; any constant works if both sides share it.
BACKGROUND_RGB = (255, 255, 255)


def alpha_mask(image: Image.Image) -> np.ndarray:
    """The bool (H, W) mask of an RGBA cut-out (alpha >= 128); an image without alpha is all True."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"))[..., 3] >= 128
    return np.ones((image.height, image.width), dtype=bool)


def on_background(image: Image.Image, background_rgb: tuple[int, int, int] = BACKGROUND_RGB) -> Image.Image:
    """An RGBA cut-out flattened onto a plain background (alpha blended), as RGB; RGB images come back as they are."""
    if image.mode not in ("RGBA", "LA", "PA", "P"):
        return to_rgb(image)
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*background_rgb, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def subject_cutout(
    image: Image.Image, mask: np.ndarray, box_xyxy: tuple[float, float, float, float], margin: float = DEFAULT_MARGIN
) -> Image.Image:
    """The subject of `image` as an RGBA cut-out framed as the data engine frames references.

    `mask` (bool, image-sized) becomes the alpha; the crop is `box_xyxy` grown by `margin` of its
    size on each side, exactly `cafe_vision.compose.compose_reference`, so a candidate's subject and
    its reference are compared at the same framing.
    """
    return compose_reference(to_rgb(image), np.asarray(mask, dtype=bool), box_xyxy, margin)


def integer_box(box_xyxy: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """`box_xyxy` grown to whole pixels (floor the start, ceil the end) and clipped to the image; never empty."""
    x0 = min(max(math.floor(box_xyxy[0]), 0), width - 1)
    y0 = min(max(math.floor(box_xyxy[1]), 0), height - 1)
    x1 = min(max(math.ceil(box_xyxy[2]), x0 + 1), width)
    y1 = min(max(math.ceil(box_xyxy[3]), y0 + 1), height)
    return x0, y0, x1, y1
