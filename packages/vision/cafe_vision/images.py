"""Bring any PIL image to the 8-bit RGB the models take."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB; transparent pixels keep their colour (alpha is dropped).

    16-bit and float images are scaled to 8 bits by their value range rather than clipped, which
    would turn most 16-bit photos white.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")


def fit_inside_hw(height: int, width: int, side_px: int) -> tuple[int, int]:
    """(height, width) scaled so the longer side is `side_px`, aspect kept.

    The arithmetic of segment-anything's `ResizeLongestSide.get_preprocess_shape`, except that
    no side rounds down to 0 pixels: that one fails on a 700×1 strip.
    """
    scale = side_px / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def fit_inside(image: Image.Image, side_px: int) -> Image.Image:
    """`image` resized (bilinear) so its longer side is `side_px`, aspect kept, no side below 1 pixel."""
    height, width = fit_inside_hw(image.height, image.width, side_px)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)
