"""Tiny real triples for tests and benchmarks: small images with a rectangle subject."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from cafe_core import SCHEMA_VERSION, InputStatus, Triple, make_key


def make_metadata(input_key: str, box: list[int], *, round_: int = 0, scores: dict | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "subject": "red cube",
        "caption": "a red cube on a noisy table",
        "box_xyxy": box,
        "scores": scores if scores is not None else {"box": 0.5, "mask_iou": 0.9},
        "gates": ["box_score", "mask_area"],
        "source": {"uri": f"file:///inputs/{input_key}", "sha256": "0" * 64, "input_key": input_key},
        "models": {"grounder": {"name": "tiny-grounding-dino", "revision": "seed0"}},
        "round": round_,
    }
    if round_ > 0:
        metadata["generation"] = {"checkpoint": "runs/tiny/step-10", "seed": 0, "sampler": {"steps": 4}}
    return metadata


def make_triple(index: int, *, size: tuple[int, int] = (64, 48), round_: int = 0, scores: dict | None = None) -> Triple:
    """A deterministic triple: noise background, a solid square subject, its mask and cut-out."""
    rng = np.random.default_rng(index)
    width, height = size
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    x0, y0 = width // 4, height // 4
    x1, y1 = x0 + width // 2, y0 + height // 2
    pixels[y0:y1, x0:x1] = (200, 30, 30)
    target = Image.fromarray(pixels, "RGB")
    mask = Image.new("L", size, 0)
    mask.paste(255, (x0, y0, x1, y1))
    reference = target.crop((x0, y0, x1, y1)).convert("RGBA")
    input_key = f"inputs/img-{index:05d}.jpg"
    return Triple(
        key=make_key(input_key),
        target=target,
        reference=reference,
        mask=mask,
        prompt="a photo of red cube",
        metadata=make_metadata(input_key, [x0, y0, x1, y1], round_=round_, scores=scores),
    )


def ok_input(triple: Triple) -> InputStatus:
    return InputStatus.ok(triple.metadata["source"]["input_key"])
