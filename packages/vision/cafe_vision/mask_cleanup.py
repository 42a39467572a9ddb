"""Small-hole filling and small-island removal for binary masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity for the mask's own pieces, as segment-anything's remove_small_regions counts them.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def clean_mask(mask: np.ndarray, *, min_hole_area_px: int = 0, min_island_area_px: int = 0) -> np.ndarray:
    """`mask` with holes smaller than `min_hole_area_px` filled and islands smaller than `min_island_area_px` removed.

    A hole is a background region that does not touch the image border (a notch at the border is
    not a hole). Holes are filled first, then islands removed. A non-empty mask never comes out
    empty: when every island is small, the largest one stays. Areas are in pixels; 0 turns a step
    off. Returns a new bool array of the same shape.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if min_hole_area_px < 0 or min_island_area_px < 0:
        raise ValueError(
            f"min_hole_area_px={min_hole_area_px} and min_island_area_px={min_island_area_px} must not be negative"
        )
    cleaned = mask.astype(bool, copy=True)
    if min_hole_area_px > 0:
        holes, num_holes = ndimage.label(~cleaned)  # 4-connected background: the dual of 8-connected foreground
        if num_holes:
            areas = np.bincount(holes.ravel(), minlength=num_holes + 1)
            border_labels = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
            small = areas < min_hole_area_px
            small[0] = False  # label 0 is the foreground
            small[border_labels] = False
            cleaned |= small[holes]
    if min_island_area_px > 0:
        islands, num_islands = ndimage.label(cleaned, structure=_EIGHT_CONNECTED)
        if num_islands:
            areas = np.bincount(islands.ravel(), minlength=num_islands + 1)
            areas[0] = 0
            keep = areas >= min_island_area_px
            if not keep[1:].any():
                keep[int(np.argmax(areas))] = True
            keep[0] = False
            cleaned = keep[islands]
    return cleaned
