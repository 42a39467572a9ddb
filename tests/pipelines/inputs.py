"""Input files for data-engine tests: small real photos, and one file of every bad kind."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")

# file name -> the reason its status row must carry (in `reason`, or for inputs repaired and
# then refused by a gate, in the `error` text's decode notes)
BAD_INPUTS = {
    "truncated.jpg": "decode.truncated",
    "empty.jpg": "decode.empty",
    "not_an_image.jpg": "decode.not_an_image",
    "cmyk.jpg": "decode.converted_cmyk",
    "sixteen_bit.png": "decode.converted_16bit",
    "animated.gif": "decode.animated",
    "exif_rotated.jpg": "decode.exif_transposed",
    "one_pixel.png": "gate.image_side",
    "bomb.png": "decode.too_many_pixels",
    "link_outside.jpg": "input.outside_root",
}
REFUSED = {name for name, reason in BAD_INPUTS.items() if not reason.startswith("decode.converted")} - {
    "exif_rotated.jpg"
}


def photo(name: str, max_side_px: int = 192) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image.thumbnail((max_side_px, max_side_px))
    return image


def write_photos(folder: Path, names: tuple[str, ...] = PHOTOS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        photo(name).save(path, quality=90)
        paths.append(path)
    return paths


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A few hundred bytes declaring a 900-megapixel image: what a decompression bomb looks like."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # a sliver of the declared data
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def write_bad_inputs(folder: Path, outside: Path) -> None:
    """One file of each kind in BAD_INPUTS into `folder`; `outside` is a folder outside it."""
    folder.mkdir(parents=True, exist_ok=True)
    good = photo("chelsea")
    buf = io.BytesIO()
    good.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "not_an_image.jpg").write_text("this is a text file with an image's name\n")
    good.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    ramp = (np.linspace(0, 65535, 128 * 96, dtype=np.uint32).reshape(96, 128)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "sixteen_bit.png")  # uint16 -> mode I;16, a 16-bit PNG
    frames = [good, good.rotate(90)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    good.save(folder / "exif_rotated.jpg", exif=exif, quality=90)
    Image.new("RGB", (1, 1), "red").save(folder / "one_pixel.png")
    (folder / "bomb.png").write_bytes(bomb_png())
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.jpg"
    good.save(secret)
    (folder / "link_outside.jpg").symlink_to(secret)
