"""Thumbnails of a triple's images, small enough to fill a page of cards quickly.

Kinds: `target` (JPEG), `reference` (PNG, alpha kept, so the page shows the cut-out on a
checkerboard), `mask` (PNG), and `overlay`: the target with the mask's outline drawn over it
(JPEG), which shows at a glance whether the mask follows the subject.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter

from cafe_core.triple import MASK, REFERENCE, TARGET
from cafe_inspector.errors import BadRequest, Unreadable

KINDS = ("target", "reference", "mask", "overlay")
SIZES_PX = (128, 256, 512, 1024)  # a few fixed sizes, so the cache is not split across many
OUTLINE_RGB = (0, 255, 140)
JPEG_QUALITY = 85
PNG_COMPRESS_LEVEL = 1  # thumbnails are served locally: speed over a few more bytes


@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str


def check_request(kind: str, size_px: int) -> None:
    if kind not in KINDS:
        raise BadRequest(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if size_px not in SIZES_PX:
        raise BadRequest(f"size: {size_px} is not one of {', '.join(map(str, SIZES_PX))} (pixels, longest side)")


def _open(data: bytes, what: str, size_px: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        # thumbnail() asks the JPEG decoder for a reduced scale first (draft mode): a large target
        # decodes at 1/2 .. 1/8 of its size, which is most of the saving.
        image.thumbnail((size_px, size_px), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise Unreadable(f"{what}: does not decode as an image ({exc}); `cafe shards validate` checks the set") from exc
    return image


def _encode(image: Image.Image, fmt: str) -> Thumbnail:
    buf = io.BytesIO()
    if fmt == "JPEG":
        # subsampling=0 (4:4:4): halved colour resolution would smear the thin outline into its background
        image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return Thumbnail(buf.getvalue(), "image/jpeg")
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return Thumbnail(buf.getvalue(), "image/png")


def outline(mask: Image.Image) -> Image.Image:
    """A band about two pixels wide along the mask's edge (mode L, 255 on the band)."""
    binary = mask.point(lambda v: 255 if v >= 128 else 0)
    return ImageChops.subtract(binary.filter(ImageFilter.MaxFilter(3)), binary.filter(ImageFilter.MinFilter(3)))


def render(kind: str, size_px: int, read: Callable[[str], bytes], key: str) -> Thumbnail:
    """The `kind` thumbnail of sample `key`, at most `size_px` on its longest side.

    `read(suffix)` returns a member's bytes (`target.jpg`, ...), read from the tar on demand.
    """
    check_request(kind, size_px)
    if kind == "reference":
        return _encode(_open(read(REFERENCE), f"{key}.{REFERENCE}", size_px), "PNG")
    if kind == "mask":
        return _encode(_open(read(MASK), f"{key}.{MASK}", size_px).convert("L"), "PNG")
    target = _open(read(TARGET), f"{key}.{TARGET}", size_px).convert("RGB")
    if kind == "target":
        return _encode(target, "JPEG")
    mask = _open(read(MASK), f"{key}.{MASK}", size_px).convert("L")
    if mask.size != target.size:
        mask = mask.resize(target.size, Image.Resampling.BILINEAR)
    target.paste(OUTLINE_RGB, (0, 0, *target.size), outline(mask))
    return _encode(target, "JPEG")
