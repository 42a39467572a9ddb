"""Safe image decoding: every way a file can be a bad image ends in a reason code, never a crash.

Refused (status `skipped`, nothing reaches a shard):
    input.outside_root      a link, a link to a folder, or a manifest path that resolves outside the
                            input roots (a folder input's root is the folder; a manifest's, its folder
                            or the roots given with --input-root)
    input.not_regular_file  a FIFO, socket or device file under an image's name: never opened (opening
                            a FIFO waits for a writer forever; a device may never end)
    input.missing           the file vanished between listing and reading
    decode.empty            zero bytes
    decode.not_an_image     no image format recognizes the bytes
    decode.truncated        the image data ends early or is corrupt
    decode.too_many_pixels  width x height above the limit (decompression bombs)
    decode.animated         more than one frame (GIF, APNG, WebP animations)
Accepted after repair (status `ok`, recorded as notes in the sample's json and status row):
    decode.exif_transposed  pixels rotated/flipped to the EXIF orientation
    decode.converted_cmyk, decode.converted_16bit, decode.converted_<mode>
                            converted to 8-bit RGB (alpha composited on white)
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_SIDE_PX = 1024
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class DecodeRefused(Exception):
    """An input that is not a usable image; `reason` is its status code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # HxWx3 uint8, RGB, EXIF orientation applied, longest side <= max_side_px
    sha256: str  # of the input's bytes as read
    original_size: tuple[int, int]  # (width, height) before resizing
    notes: tuple[str, ...]  # decode.* codes of repairs made


def file_kind(mode: int) -> str:
    """What a file is, by its `st_mode`, in words for a status row ("a FIFO", "a regular file")."""
    for test, kind in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return f"a special file (mode {mode:o})"


def not_regular(path: str, mode: int) -> DecodeRefused:
    return DecodeRefused(
        "input.not_regular_file", f"{path} is {file_kind(mode)}, not a regular file; only regular files are read"
    )


def read_input_bytes(path: str, offset: int = 0, size: int = -1) -> bytes:
    """The input's bytes: a whole file, or `size` bytes at `offset` (a member inside a tar).

    Only a regular file is opened: a FIFO would block `open()` until a writer came (forever, holding
    the build), a device may never end. The file is checked again after opening, because it may have
    been replaced since the check (or since listing); O_NONBLOCK keeps that open from waiting.
    """
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise DecodeRefused("input.missing", f"{path}: the file is gone") from exc
    with open(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        if size < 0:
            return f.read()
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DecodeRefused("decode.truncated", f"{path}: member at {offset} wants {size} bytes, found {len(data)}")
    return data


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        # PIL's own conversion clips 16-bit values at 255 (a white image): scale them instead.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        notes.append("decode.converted_16bit")
        return Image.fromarray(np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    notes.append(f"decode.converted_{image.mode.lower().replace(';', '_')}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side_px: int | None = DEFAULT_MAX_SIDE_PX
) -> DecodedImage:
    """Decode untrusted bytes into 8-bit RGB pixels, or raise DecodeRefused with the reason."""
    if not data:
        raise DecodeRefused("decode.empty", "the file has zero bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    notes: list[str] = []
    with warnings.catch_warnings():
        # PIL warns between 1x and 2x its own pixel limit; our limit is checked explicitly below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise DecodeRefused("decode.too_many_pixels", str(exc)) from exc
        except UnidentifiedImageError as exc:
            raise DecodeRefused("decode.not_an_image", "no image format recognizes these bytes") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise DecodeRefused("decode.too_many_pixels", f"{width}x{height} is more than {max_pixels:,} pixels")
        if getattr(image, "n_frames", 1) > 1:
            raise DecodeRefused("decode.animated", f"{image.n_frames} frames; only still images are used")
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on: truncated images would pass as whole")
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:  # PIL reports broken data with all three
            raise DecodeRefused("decode.truncated", f"image data is truncated or corrupt: {exc}") from exc
    orientation = image.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
        notes.append("decode.exif_transposed")
    image = _to_rgb(image, notes)
    original_size = image.size
    if max_side_px is not None and max(image.size) > max_side_px:
        scale = max_side_px / max(image.size)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.LANCZOS)
    return DecodedImage(np.asarray(image, dtype=np.uint8), sha256, original_size, tuple(notes))
