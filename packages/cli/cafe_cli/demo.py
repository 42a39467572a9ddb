"""`cafe demo`: triples from the real photos scikit-image ships, then stats, a contact sheet, validation.

Until the data engine lands (captioning, grounding, segmentation on Ray), subjects are named by
hand and masks come from a classical Otsu threshold: good enough to show the data contract on
real pictures, not a substitute for the model pipeline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data, filters

from cafe_core import SCHEMA_VERSION, InputStatus, ShardSet, Triple, make_key

MASK_AREA_RANGE = (0.01, 0.64)
REFERENCE_MARGIN = 0.08
MASKER = {"name": "otsu-largest-component", "revision": "demo-1"}


@dataclass(frozen=True)
class DemoPhoto:
    name: str
    subject: str
    load: Callable[[], np.ndarray]


PHOTOS = (
    DemoPhoto("astronaut", "astronaut", data.astronaut),
    DemoPhoto("chelsea", "cat", data.chelsea),
    DemoPhoto("coffee", "coffee cup", data.coffee),
    DemoPhoto("rocket", "rocket", data.rocket),
    DemoPhoto("camera", "cameraman", data.camera),
    DemoPhoto("motorcycle", "motorcycle", lambda: data.stereo_motorcycle()[0]),
    DemoPhoto("horse", "horse", lambda: (~data.horse()).astype(np.uint8) * 255),
)


def _to_rgb(pixels: np.ndarray) -> Image.Image:
    image = Image.fromarray(pixels)
    return image.convert("RGB")


def otsu_subject_mask(image: Image.Image) -> np.ndarray:
    """The largest hole-filled component of the Otsu class that touches the border least."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    foreground = gray > filters.threshold_otsu(gray)
    border = np.concatenate([foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]])
    if border.mean() > 0.5:  # the bright class is the background: take the dark one
        foreground = ~foreground
    labels, count = ndimage.label(foreground)
    if count == 0:
        return foreground
    sizes = ndimage.sum(foreground, labels, range(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def compose_reference(target: Image.Image, mask: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    """The subject cut out: RGBA, alpha = mask, cropped to the box plus a margin."""
    x0, y0, x1, y1 = box
    mx, my = round((x1 - x0) * REFERENCE_MARGIN), round((y1 - y0) * REFERENCE_MARGIN)
    crop = (max(0, x0 - mx), max(0, y0 - my), min(target.width, x1 + mx), min(target.height, y1 + my))
    rgba = target.convert("RGBA")
    rgba.putalpha(Image.fromarray(mask.astype(np.uint8) * 255, "L"))
    return rgba.crop(crop)


def photo_to_triple(photo: DemoPhoto) -> tuple[InputStatus, list[Triple]]:
    """One demo photo through the classical masker and the area gate."""
    input_key = f"skimage/{photo.name}"
    target = _to_rgb(photo.load())
    mask = otsu_subject_mask(target)
    area = float(mask.mean())
    if not MASK_AREA_RANGE[0] <= area <= MASK_AREA_RANGE[1]:
        error = f"mask covers {area:.0%} of the image, outside {MASK_AREA_RANGE[0]:.0%}-{MASK_AREA_RANGE[1]:.0%}"
        return InputStatus(input_key, "skipped", reason="gate.mask_area", error=error), []
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "subject": photo.subject,
        "caption": f"a photo of a {photo.subject}",
        "box_xyxy": list(box),
        "scores": {"mask_area": round(area, 4)},
        "gates": ["mask_area"],
        "source": {
            "uri": f"skimage://data/{photo.name}",
            "sha256": hashlib.sha256(target.tobytes()).hexdigest(),
            "input_key": input_key,
        },
        "models": {"masker": MASKER},
        "round": 0,
    }
    triple = Triple(
        key=make_key(input_key),
        target=target,
        reference=compose_reference(target, mask, box),
        mask=Image.fromarray(mask.astype(np.uint8) * 255, "L"),
        prompt=f"a photo of a {photo.subject}",
        metadata=metadata,
    )
    return InputStatus.ok(input_key, source_uri=metadata["source"]["uri"]), [triple]


def build_demo_set(output: Path, mode: str = "overwrite") -> dict:
    """Write the demo shard set to `output`; returns dataset.json's content."""
    shard_set = ShardSet(output, prefix="demo")
    with shard_set.writer(mode=mode, max_samples=4) as writer:
        for photo in PHOTOS:
            status, triples = photo_to_triple(photo)
            writer.add(status, triples)
    return ShardSet(output, prefix="demo").summarize()
