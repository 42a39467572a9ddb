"""Render a toy subject into a toy scene: the image, the exact subject mask and the caption.

No anti-aliasing: a pixel belongs to the subject when its centre falls inside the shape, the mask is
that set of pixels, and exactly those pixels carry the subject's fill, so the mask is exact by
construction. The fill is the subject's colour (solid), or its colour with bands (striped) or dots
(dotted) of its dark shade (`shade_rgb`: the colour at 45 % brightness, so the hue stays the
subject's). A one-pixel outline in the background's `outline_rgb` surrounds the mask, outside it
(see `cafe_core.toy.world` for why).

Geometry: the subject sits in a square box whose side is the size's fraction of the image side
(small 0.3, medium 0.45, large 0.6). Its nominal centre is at 22 %, 50 % or 78 % of the width
(left, centre, right) and half way down, moved by a seeded jitter of up to 3 % of the width and 8 %
of the height, then clamped so that the box and its outline stay inside the image with a margin.
The seed also draws the background texture; nothing else is random.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from cafe_core.toy.backgrounds import texture
from cafe_core.toy.caption import caption
from cafe_core.toy.world import RGB, Scene, Subject, background, hue, size

MIN_SIZE_PX = 24
MAX_SIZE_PX = 1024
_CENTRE_X = {"left": 0.22, "centre": 0.5, "right": 0.78}
_JITTER_X = 0.03
_JITTER_Y = 0.08
_SHADE = 0.45


@dataclass(frozen=True)
class Rendering:
    """One drawn toy image. `image` (H, W, 3) uint8 and `mask` (H, W) bool are read-only;
    `box_xyxy` is the mask's bounding box, exclusive at x1 and y1."""

    image: np.ndarray
    mask: np.ndarray
    caption: str
    subject: Subject
    scene: Scene
    seed: int
    box_xyxy: tuple[int, int, int, int]


def shade_rgb(rgb: RGB) -> RGB:
    """The dark tone of a striped or dotted subject of colour `rgb`."""
    return tuple(round(channel * _SHADE) for channel in rgb)  # type: ignore[return-value]


def _star_polygon() -> np.ndarray:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    points = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    points[:, 1] += (1.0 - points[:, 1].max()) / 2  # centre it vertically in its box
    return points


_POLYGONS = {
    "triangle": np.array([(0.0, -0.95), (1.0, 0.8), (-1.0, 0.8)]),
    "star": _star_polygon(),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray to its right crosses the boundary an odd number of times."""
    inside = np.zeros(u.shape, dtype=bool)
    for (u1, v1), (u2, v2) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if v1 == v2:
            continue
        crosses = (v1 > v) != (v2 > v)
        inside ^= crosses & (u < (u2 - u1) * (v - v1) / (v2 - v1) + u1)
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u, v) in box coordinates ([-1, 1], v down) lie inside `shape`."""
    radius = np.hypot(u, v)
    if shape == "circle":
        return radius <= 1.0
    if shape == "ring":
        return (radius <= 1.0) & (radius >= 0.55)
    if shape == "square":
        return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    if shape == "cross":
        arm, reach = 0.34, 0.95
        return ((np.abs(u) <= arm) & (np.abs(v) <= reach)) | ((np.abs(v) <= arm) & (np.abs(u) <= reach))
    if shape in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[shape])
    raise ValueError(f"toy render: no drawing for shape {shape!r}")


@functools.lru_cache(maxsize=8)
def _pixel_centres(size_px: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size_px, 0:size_px].astype(np.float64) + 0.5
    y.flags.writeable = False
    x.flags.writeable = False
    return y, x


def _box_centre(scene: Scene, size_px: int, side_px: float, rng: np.random.Generator) -> tuple[float, float]:
    jitter_x, jitter_y = rng.uniform(-1.0, 1.0, 2)
    cx = (_CENTRE_X[scene.position] + _JITTER_X * jitter_x) * size_px
    cy = (0.5 + _JITTER_Y * jitter_y) * size_px
    # The outline takes one pixel outside the box; one more keeps it off the image border.
    low, high = 2.0 + side_px / 2, size_px - 2.0 - side_px / 2
    return float(np.clip(cx, low, high)), float(np.clip(cy, low, high))


def _fill(pattern: str, rgb: RGB, x: np.ndarray, y: np.ndarray, side_px: float) -> np.ndarray:
    """The fill colour of each pixel (H, W, 3) for `pattern`. `x`, `y` count whole pixels from the box's
    corner, so a pattern sits the same way on its shape wherever the shape stands."""
    dark = np.zeros(x.shape, dtype=bool)
    if pattern == "striped":
        band_px = max(1, round(side_px / 7))
        dark = ((x + y) // band_px) % 2 == 1  # diagonal bands
    elif pattern == "dotted":
        pitch_px = max(4, round(side_px / 3.5))
        du = x % pitch_px - (pitch_px - 1) / 2
        dv = y % pitch_px - (pitch_px - 1) / 2
        dark = np.hypot(du, dv) <= 0.27 * pitch_px
    return np.where(dark[..., None], np.array(shade_rgb(rgb), np.uint8), np.array(rgb, np.uint8))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels next to the mask (8-neighbourhood), outside it."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    return grown & ~mask


def render(subject: Subject, scene: Scene, *, size_px: int = 32, seed: int) -> Rendering:
    """Draw `subject` in `scene` on a `size_px` x `size_px` image; the same arguments give the same bytes."""
    if not isinstance(size_px, int) or not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise ValueError(
            f"toy render: size_px {size_px!r} must be an int from {MIN_SIZE_PX} to {MAX_SIZE_PX} "
            f"(below {MIN_SIZE_PX} px a small subject is too few pixels to show its shape)"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"toy render: seed {seed!r} must be an int >= 0")
    texture_rng, layout_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    image = texture(scene.background, size_px, texture_rng)

    side_px = size(scene.size).fraction * size_px
    cx, cy = _box_centre(scene, size_px, side_px, layout_rng)
    y, x = _pixel_centres(size_px)
    mask = shape_mask(subject.shape, (x - cx) / (side_px / 2), (y - cy) / (side_px / 2))

    image[_outline(mask)] = background(scene.background).outline_rgb
    corner_x, corner_y = np.floor(cx - side_px / 2), np.floor(cy - side_px / 2)
    fill = _fill(subject.pattern, hue(subject.colour).rgb, np.floor(x) - corner_x, np.floor(y) - corner_y, side_px)
    image[mask] = fill[mask]

    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)
    image.flags.writeable = False
    mask.flags.writeable = False
    return Rendering(image, mask, caption(subject, scene), subject, scene, seed, box)
