"""`Triple`: one (reference, prompt, target) training sample of the data contract.

On disk a triple is five tar members sharing one key:
    KEY.target.jpg     RGB, the full image the prompt describes
    KEY.reference.png  RGBA, the subject cut out, alpha = mask
    KEY.mask.png       L, the subject mask in target coordinates
    KEY.prompt.txt     UTF-8 prompt naming the subject
    KEY.json           metadata, see cafe_core.metadata
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from cafe_core.keys import KEY_PATTERN
from cafe_core.metadata import metadata_problems

TARGET = "target.jpg"
REFERENCE = "reference.png"
MASK = "mask.png"
PROMPT = "prompt.txt"
METADATA = "json"
MEMBERS = (TARGET, REFERENCE, MASK, PROMPT, METADATA)

JPEG_QUALITY = 95


class TripleError(ValueError):
    """A triple breaks the data contract; the message names every bad field."""


@dataclass(frozen=True, eq=False)
class Triple:
    key: str
    target: Image.Image
    reference: Image.Image
    mask: Image.Image
    prompt: str
    metadata: dict[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        problems = triple_problems(self.key, self.target, self.reference, self.mask, self.prompt, self.metadata)
        if problems:
            raise TripleError(f"triple {self.key!r} breaks the data contract: " + "; ".join(problems))

    @property
    def round(self) -> int:
        return int(self.metadata["round"])

    def encode(self) -> dict[str, bytes]:
        """The five tar members, by suffix (`target.jpg`, ...), as bytes."""
        return {
            TARGET: _encode_image(self.target, "JPEG", quality=JPEG_QUALITY),
            REFERENCE: _encode_image(self.reference, "PNG"),
            MASK: _encode_image(self.mask, "PNG"),
            PROMPT: self.prompt.encode("utf-8"),
            METADATA: encode_metadata(self.metadata),
        }


def _encode_image(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def encode_metadata(metadata: Mapping[str, Any]) -> bytes:
    # Sorted keys: the same metadata always gives the same bytes, so reruns give identical tars.
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _mode_problem(name: str, image: Any, mode: str) -> str | None:
    if not isinstance(image, Image.Image):
        return f"{name}: expected a PIL image, got {type(image).__name__}"
    if image.mode != mode:
        return f"{name}: mode {image.mode} where the contract requires {mode} (convert with .convert({mode!r}))"
    return None


def triple_problems(key: Any, target: Any, reference: Any, mask: Any, prompt: Any, metadata: Any) -> list[str]:
    """Every way these parts break the data contract, each message naming its field."""
    problems = []
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        problems.append(f"key: {key!r} is not 16 lowercase hex characters (use cafe_core.make_key)")
    for name, image, mode in (("target", target, "RGB"), ("reference", reference, "RGBA"), ("mask", mask, "L")):
        problem = _mode_problem(name, image, mode)
        if problem:
            problems.append(problem)
    if isinstance(target, Image.Image) and isinstance(mask, Image.Image) and mask.size != target.size:
        problems.append(f"mask: size {mask.size} differs from target size {target.size}")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append("prompt: expected non-empty text naming the subject")
    else:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.append(f"prompt: not encodable as UTF-8 ({exc.reason} at {exc.start})")
    size = target.size if isinstance(target, Image.Image) else None
    problems += [p if p.startswith("metadata:") else f"metadata.{p}" for p in metadata_problems(metadata, size)]
    return problems


def _decode_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_triple(key: str, members: Mapping[str, bytes]) -> Triple:
    """Build a `Triple` from its tar members (suffix -> bytes).

    Raises TripleError when a member is missing or the parts break the contract, and the
    decoder's own error (OSError, ValueError) when an image or the json does not decode.
    """
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        raise TripleError(f"triple {key!r}: missing member(s) {', '.join(missing)}")
    return Triple(
        key=key,
        target=_decode_image(members[TARGET]),
        reference=_decode_image(members[REFERENCE]),
        mask=_decode_image(members[MASK]),
        prompt=members[PROMPT].decode("utf-8"),
        metadata=json.loads(members[METADATA]),
    )
