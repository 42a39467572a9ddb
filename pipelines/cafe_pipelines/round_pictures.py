"""Pictures of a self-improvement round for people: score histograms and an examples grid, drawn with PIL.

histogram_image("dino", accepted=[0.7, 0.8], rejected=[0.2]).save("report/histogram-dino.png")
examples_grid(examples).save("report/examples.png")    # reference | candidate, scores and verdict
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont, ImageOps

from cafe_core.contact import checkerboard

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MUTED = (150, 150, 150)
ACCEPTED = (80, 190, 110)
REJECTED = (220, 80, 70)
# The scores an examples cell shows first, in this order; any others follow by name.
SHOWN_FIRST = ("dino", "clip_i", "clip_t", "copy_paste", "num_instances", "subject_found")
SHORT_NAMES = {"num_instances": "n", "subject_found": "found", "copy_paste": "copy"}


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Example:
    """One candidate to show: its reference cut-out and image (encoded), and what the round made of it."""

    key: str
    reference_png: bytes
    target_jpg: bytes
    prompt: str
    accepted: bool
    reason: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)


def histogram_image(
    name: str,
    accepted: Sequence[float],
    rejected: Sequence[float],
    *,
    bins: int = 20,
    size: tuple[int, int] = (480, 300),
) -> Image.Image:
    """Stacked bars of one score: accepted candidates (green) under rejected ones (red), per bin."""
    values = [v for v in (*accepted, *rejected) if math.isfinite(v)]
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    draw.text((10, 8), f"{name}: {len(accepted)} accepted, {len(rejected)} rejected", fill=TEXT, font=font)
    if not values:
        draw.text((10, height // 2), "no scores", fill=MUTED, font=font)
        return image
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    step = (high - low) / bins

    def counts(series: Sequence[float]) -> list[int]:
        found = [0] * bins
        for v in series:
            if math.isfinite(v):
                found[min(bins - 1, int((v - low) / step))] += 1
        return found

    ok, bad = counts(accepted), counts(rejected)
    tallest = max(a + r for a, r in zip(ok, bad, strict=True)) or 1
    left, right, top, bottom = 40, width - 10, 30, height - 28
    bar_w = (right - left) / bins
    for i in range(bins):
        x0, x1 = left + i * bar_w + 1, left + (i + 1) * bar_w - 1
        ok_h = (bottom - top) * ok[i] / tallest
        bad_h = (bottom - top) * bad[i] / tallest
        if ok[i]:
            draw.rectangle((x0, bottom - ok_h, x1, bottom), fill=ACCEPTED)
        if bad[i]:
            draw.rectangle((x0, bottom - ok_h - bad_h, x1, bottom - ok_h), fill=REJECTED)
    draw.line((left, bottom, right, bottom), fill=MUTED)
    draw.line((left, top, left, bottom), fill=MUTED)
    draw.text((4, top - 6), str(tallest), fill=MUTED, font=font)
    draw.text((left, bottom + 6), f"{low:.3g}", fill=MUTED, font=font)
    label = f"{high:.3g}"
    draw.text((right - draw.textlength(label, font=font), bottom + 6), label, fill=MUTED, font=font)
    return image


def _tile(data: bytes, tile_px: int) -> Image.Image:
    """An encoded image fitted into a square tile, transparent pixels over a checkerboard."""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGBA")
    image = ImageOps.contain(image, (tile_px, tile_px), Image.Resampling.BICUBIC)  # small images scale up too
    tile = checkerboard((tile_px, tile_px))
    tile.paste(image, ((tile_px - image.width) // 2, (tile_px - image.height) // 2), image)
    return tile


def examples_grid(examples: Sequence[Example], *, tile_px: int = 128, columns: int = 2) -> Image.Image:
    """One cell per example: reference | candidate, then the verdict, key, prompt and scores."""
    font_px = 12
    line_h = font_px + 3
    text_lines = 5
    cell_w, cell_h = 2 * tile_px + 12, tile_px + 10 + text_lines * line_h + 8
    rows = max(1, math.ceil(len(examples) / columns))
    sheet = Image.new("RGB", (columns * cell_w + 8, rows * cell_h + 8), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(font_px)
    chars = max(20, int(cell_w / (font_px * 0.55)))
    if not examples:
        draw.text((10, 10), "no candidates", fill=MUTED, font=font)
    for index, example in enumerate(examples):
        x, y = 8 + (index % columns) * cell_w, 8 + (index // columns) * cell_h
        sheet.paste(_tile(example.reference_png, tile_px), (x, y))
        sheet.paste(_tile(example.target_jpg, tile_px), (x + tile_px + 4, y))
        verdict = "accepted" if example.accepted else f"rejected: {example.reason}"
        names = [n for n in SHOWN_FIRST if n in example.scores] + sorted(set(example.scores) - set(SHOWN_FIRST))
        scores = " ".join(f"{SHORT_NAMES.get(n, n)}={example.scores[n]:.3g}" for n in names)
        lines = [verdict, example.key, *textwrap.wrap(example.prompt, chars)[:1], *textwrap.wrap(scores, chars)[:2]]
        for line_no, line in enumerate(lines[:text_lines]):
            color = (ACCEPTED if example.accepted else REJECTED) if line_no == 0 else (TEXT if line_no != 1 else MUTED)
            draw.text((x, y + tile_px + 6 + line_no * line_h), line, fill=color, font=font)
    return sheet
