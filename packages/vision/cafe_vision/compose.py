"""Reference composition: the subject cut out of its target, as the data contract wants it."""

from __future__ import annotations

import numpy as np
from PIL import Image

DEFAULT_MARGIN = 0.08


def box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight integer box [x0, y0, x1, y1) around a non-empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("box_from_mask: the mask is empty")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean HxW mask as the contract's mode-L image (0 or 255)."""
    return Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "L")


def compose_reference(
    target: Image.Image, mask: np.ndarray, box_xyxy: tuple[float, float, float, float], margin: float = DEFAULT_MARGIN
) -> Image.Image:
    """RGBA cut-out: the target with the mask as alpha, cropped to the box grown by `margin`
    of its size on each side (clipped to the image), so the subject's edges are not cut."""
    if target.mode != "RGB":
        raise ValueError(f"compose_reference: target mode {target.mode}, expected RGB")
    if mask.shape != (target.height, target.width):
        raise ValueError(f"compose_reference: mask shape {mask.shape} != target {(target.height, target.width)}")
    if margin < 0:
        raise ValueError(f"compose_reference: margin {margin} must be >= 0")
    x0, y0, x1, y1 = box_xyxy
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    crop = (
        max(0, int(np.floor(x0 - mx))),
        max(0, int(np.floor(y0 - my))),
        min(target.width, int(np.ceil(x1 + mx))),
        min(target.height, int(np.ceil(y1 + my))),
    )
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise ValueError(f"compose_reference: box {box_xyxy} is empty inside the {target.size} image")
    rgba = target.convert("RGBA")
    rgba.putalpha(mask_image(mask))
    return rgba.crop(crop)
