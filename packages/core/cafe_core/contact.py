"""Pictures of triples for people: one triple side by side, and contact sheets of many."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from cafe_core.triple import Triple

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
CHECKER = ((200, 200, 200), (150, 150, 150))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def checkerboard(size: tuple[int, int], cell: int = 8) -> Image.Image:
    """A checkerboard to show the reference's transparent pixels as transparent."""
    board = Image.new("RGB", size, CHECKER[0])
    draw = ImageDraw.Draw(board)
    for y in range(0, size[1], cell):
        for x in range((y // cell) % 2 * cell, size[0], 2 * cell):
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=CHECKER[1])
    return board


def _fit_height(image: Image.Image, height: int) -> Image.Image:
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def triple_panel(triple: Triple, height: int = 256, caption_lines: int = 3) -> Image.Image:
    """reference | mask | target at one height, the key, subject and prompt written below."""
    reference = _fit_height(triple.reference, height)
    shown_reference = checkerboard(reference.size)
    shown_reference.paste(reference, (0, 0), reference)
    tiles = [shown_reference, _fit_height(triple.mask.convert("RGB"), height), _fit_height(triple.target, height)]
    gap = 4
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    font_px = max(10, height // 16)
    chars_per_line = max(20, int(width / (font_px * 0.55)))
    lines = [f"{triple.key}  subject: {triple.metadata.get('subject', '')}"]
    lines += textwrap.wrap(triple.prompt, chars_per_line)[:caption_lines]
    text_height = (font_px + 4) * len(lines) + 8
    panel = Image.new("RGB", (width, height + text_height), BACKGROUND)
    x = 0
    for tile in tiles:
        panel.paste(tile, (x, 0))
        x += tile.width + gap
    draw = ImageDraw.Draw(panel)
    font = _font(font_px)
    for i, line in enumerate(lines):
        draw.text((4, height + 4 + i * (font_px + 4)), line, fill=TEXT, font=font)
    return panel


def contact_sheet(triples: Sequence[Triple], columns: int = 4, height: int = 160, title: str = "") -> Image.Image:
    """A grid of `triple_panel`s, `columns` wide, with an optional title line on top."""
    if not triples:
        raise ValueError("contact_sheet: no triples to show")
    panels = [triple_panel(t, height=height, caption_lines=2) for t in triples]
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    cell_w = max(p.width for p in panels)
    cell_h = max(p.height for p in panels)
    pad = 8
    title_h = 28 if title else 0
    sheet = Image.new("RGB", (columns * (cell_w + pad) + pad, rows * (cell_h + pad) + pad + title_h), BACKGROUND)
    if title:
        ImageDraw.Draw(sheet).text((pad, 6), title, fill=TEXT, font=_font(16))
    for i, panel in enumerate(panels):
        row, col = divmod(i, columns)
        sheet.paste(panel, (pad + col * (cell_w + pad), title_h + pad + row * (cell_h + pad)))
    return sheet
