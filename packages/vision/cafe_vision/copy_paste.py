"""Copy-paste detection: is the subject found in a candidate the reference's own pixels pasted in?

A customization model can cheat its DINO and CLIP-I scores by pasting the reference into the
scene; self-improvement must not learn from such candidates. This score is pixel-based on
purpose (no learned features): a pasted copy matches the reference pixel for pixel once the found
region is brought to the reference's size, while a re-posed or re-rendered subject does not, and
that holds whatever the models' weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cafe_vision.compose import box_from_mask
from cafe_vision.cutout import alpha_mask, integer_box
from cafe_vision.images import to_rgb

# Both sides are compared at this longer side: small enough that a box a few pixels off or a
# JPEG round trip barely matters, large enough that a re-posed subject's texture does not line up.
COMPARE_SIDE_PX = 64
# Mean absolute differences (RGB in [0, 1]) at or beyond this count as no closeness at all: a JPEG
# or VAE round trip of a paste differs by about 0.02, a recoloured subject by 0.1 or more.
MAX_MEAN_ABS_DIFF = 0.25
# Where the detection box is all there is (SAM gave nothing usable), it may hold some background
# around the subject: the box is also tried inset by these fractions of its size on each side.
BOX_INSETS = (0.0, 0.05, 0.1)
# A reference region flatter than this (std of its pixel values in [0, 1]) has no texture to
# correlate; it is then judged on the absolute difference alone.
MIN_TEXTURE_STD = 0.02


@dataclass(frozen=True)
class ReferencePixels:
    """A reference prepared for `copy_paste_score`: prepare once with `reference_pixels`, score many candidates.

    compare_wh: the size both sides are compared at; mask: bool (h, w) at that size, the alpha less
    its rim; values: (K, 3) RGB in [0, 1] of the reference under `mask`; flat: too little texture to
    correlate (judged on the absolute difference alone).
    """

    compare_wh: tuple[int, int]
    mask: np.ndarray
    values: np.ndarray
    flat: bool


def reference_pixels(reference: Image.Image) -> ReferencePixels | None:
    """`reference` (RGBA cut-out, alpha = mask; RGB counts as all subject) prepared; None if it has no subject."""
    reference_mask = alpha_mask(reference)
    if not reference_mask.any():
        return None
    x0, y0, x1, y1 = box_from_mask(reference_mask)
    reference_rgb = to_rgb(reference).crop((x0, y0, x1, y1))
    reference_mask = reference_mask[y0:y1, x0:x1]
    compare_wh = _compare_size(reference_rgb.width, reference_rgb.height)
    compare_mask = np.asarray(Image.fromarray(reference_mask).resize(compare_wh, Image.Resampling.NEAREST), dtype=bool)
    compare_mask = _erode(compare_mask) if _erode(compare_mask).any() else compare_mask
    if not compare_mask.any():
        return None
    values = _pixels(reference_rgb.resize(compare_wh, Image.Resampling.BILINEAR))[compare_mask]
    return ReferencePixels(compare_wh, compare_mask, values, float(values.std()) < MIN_TEXTURE_STD)


def copy_paste_score(
    reference: Image.Image | ReferencePixels | None,
    image: Image.Image,
    box_xyxy: tuple[float, float, float, float] | None,
    mask: np.ndarray | None,
) -> float:
    """How close the subject found in `image` is to a pasted copy of `reference`, in [0, 1] (1: a pasted copy).

    reference: the RGBA cut-out (alpha = mask; an RGB reference counts as all subject), or what
        `reference_pixels` made of it (None: it had no subject, 0.0).
    box_xyxy / mask: the found subject in `image` (pixels; bool image-sized mask); None: not found, 0.0.

    The reference is cropped to its alpha's tight box; the candidate region is the found mask's
    tight box (and, as further tries, the detection box and that box inset), resized to the
    reference crop. On the reference's alpha, the similarity is max(normalized cross-correlation,
    0) * (1 - mean absolute difference / MAX_MEAN_ABS_DIFF) over RGB values in [0, 1], also tried
    with the region mirrored; the best try counts. The comparison leaves out the alpha's 1-pixel
    rim, where resizing mixes in the background.
    """
    prepared = reference_pixels(reference) if isinstance(reference, Image.Image) else reference
    if box_xyxy is None or prepared is None:
        return 0.0
    rgb = to_rgb(image)
    regions = []
    if mask is not None and np.asarray(mask).any():
        regions.append(box_from_mask(np.asarray(mask, dtype=bool)))
    x0, y0, x1, y1 = box_xyxy
    for inset in BOX_INSETS:
        dx, dy = inset * (x1 - x0), inset * (y1 - y0)
        regions.append(integer_box((x0 + dx, y0 + dy, x1 - dx, y1 - dy), rgb.width, rgb.height))
    tries = []
    for region in dict.fromkeys(regions):  # unique, in order
        candidate = _pixels(rgb.crop(region).resize(prepared.compare_wh, Image.Resampling.BILINEAR))
        tries.extend((candidate[prepared.mask], candidate[:, ::-1][prepared.mask]))
    return float(_similarities(prepared, np.stack(tries)).max())


def _compare_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, COMPARE_SIDE_PX / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _erode(mask: np.ndarray) -> np.ndarray:
    """`mask` less its 1-pixel rim (4-neighbourhood; the image border counts as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    return padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def _similarities(reference: ReferencePixels, tries: np.ndarray) -> np.ndarray:
    """(T,) max(NCC, 0) * closeness of the reference's (K, 3) pixels and each of `tries` (T, K, 3).

    All tries at once: a candidate has up to 8 (4 regions, each also mirrored).
    """
    closeness = np.maximum(0.0, 1.0 - np.abs(tries - reference.values).mean(axis=(1, 2)) / MAX_MEAN_ABS_DIFF)
    if reference.flat:
        return closeness  # NCC counts as 1 on a flat reference
    # Centred per channel: a global brightness shift is not a re-render, a recolouring (channels moved) is.
    centred_reference = reference.values - reference.values.mean(axis=0)
    centred_tries = tries - tries.mean(axis=1, keepdims=True)
    numerator = (centred_reference * centred_tries).sum(axis=(1, 2))
    denominator = np.sqrt((centred_reference**2).sum() * (centred_tries**2).sum(axis=(1, 2)))
    correlation = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return np.maximum(correlation, 0.0) * closeness
