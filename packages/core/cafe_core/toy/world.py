"""The toy world's vocabulary: subjects (shape, colour, pattern) and scenes (background, position, size).

Every name here is a single lowercase word or words joined by `_` (`night_sky`), so captions and
command-line options can carry them; `BACKGROUNDS[i].phrase` is how a caption says it.

Colours were chosen so that a nearest-colour classifier on a subject's pixels tells them apart at
32 px (every pair is at least 90 apart in RGB) and so that none equals a background's dominant
colour. Three pairs remain near each other (green on grass, blue on water, red on the brick wall,
all under 100 apart): they are rendered like every other pair, because every subject is drawn with a
one-pixel outline in its background's `outline_rgb`, just outside the mask, so the subject's edge is
always visible and the caption always holds. The outline is not part of the mask: the mask's
pixels are exactly the subject's fill.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
POSITIONS: tuple[str, ...] = ("left", "centre", "right")


@dataclass(frozen=True)
class Hue:
    """A subject colour: its name in captions and the RGB of its fill."""

    name: str
    rgb: RGB


@dataclass(frozen=True)
class Background:
    """A scene's background: its name, the words a caption uses for it, its dominant colour (the
    base of its procedural texture) and the colour of the outline drawn around every subject on it."""

    name: str
    phrase: str
    rgb: RGB
    outline_rgb: RGB


@dataclass(frozen=True)
class Size:
    """A subject size: the side of the subject's square box as a fraction of the image side."""

    name: str
    fraction: float


COLOURS: tuple[Hue, ...] = (
    Hue("red", (220, 30, 30)),
    Hue("orange", (255, 128, 0)),
    Hue("yellow", (250, 220, 20)),
    Hue("green", (30, 170, 40)),
    Hue("cyan", (0, 200, 220)),
    Hue("blue", (30, 60, 230)),
    Hue("purple", (140, 40, 200)),
    Hue("pink", (255, 110, 200)),
)

_DARK_OUTLINE: RGB = (20, 20, 20)
_LIGHT_OUTLINE: RGB = (235, 235, 235)

BACKGROUNDS: tuple[Background, ...] = (
    Background("grass", "on the grass", (70, 130, 45), _DARK_OUTLINE),
    Background("sand", "on the sand", (215, 190, 140), _DARK_OUTLINE),
    Background("snow", "on the snow", (236, 240, 247), _DARK_OUTLINE),
    Background("night_sky", "under the night sky", (14, 18, 48), _LIGHT_OUTLINE),
    Background("brick_wall", "in front of the brick wall", (150, 60, 45), _DARK_OUTLINE),
    Background("water", "on the water", (40, 90, 170), _DARK_OUTLINE),
)

SIZES: tuple[Size, ...] = (Size("small", 0.3), Size("medium", 0.45), Size("large", 0.6))

COLOUR_NAMES: tuple[str, ...] = tuple(hue.name for hue in COLOURS)
BACKGROUND_NAMES: tuple[str, ...] = tuple(background.name for background in BACKGROUNDS)
SIZE_NAMES: tuple[str, ...] = tuple(size.name for size in SIZES)


def _check(kind: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"toy world: {kind} {value!r} is not one of {', '.join(allowed)}")
    return value  # type: ignore[return-value]


def hue(name: str) -> Hue:
    """The colour named `name`; ValueError naming the allowed colours otherwise."""
    return COLOURS[COLOUR_NAMES.index(_check("colour", name, COLOUR_NAMES))]


def background(name: str) -> Background:
    """The background named `name`; ValueError naming the allowed backgrounds otherwise."""
    return BACKGROUNDS[BACKGROUND_NAMES.index(_check("background", name, BACKGROUND_NAMES))]


def size(name: str) -> Size:
    """The size named `name`; ValueError naming the allowed sizes otherwise."""
    return SIZES[SIZE_NAMES.index(_check("size", name, SIZE_NAMES))]


@dataclass(frozen=True)
class Subject:
    """What the model must keep: a shape in a colour with a pattern, e.g. a red striped star."""

    shape: str
    colour: str
    pattern: str

    def __post_init__(self) -> None:
        _check("shape", self.shape, SHAPES)
        _check("colour", self.colour, COLOUR_NAMES)
        _check("pattern", self.pattern, PATTERNS)

    @property
    def phrase(self) -> str:
        """`colour pattern shape`, e.g. "red striped star" (the pattern is always named, "solid" too)."""
        return f"{self.colour} {self.pattern} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """What the prompt may change: the background, where the subject stands and how big it is."""

    background: str
    position: str
    size: str

    def __post_init__(self) -> None:
        _check("background", self.background, BACKGROUND_NAMES)
        _check("position", self.position, POSITIONS)
        _check("size", self.size, SIZE_NAMES)


def all_subjects() -> tuple[Subject, ...]:
    """Every subject, in the order shape, then colour, then pattern (6 x 8 x 3 = 144)."""
    return tuple(Subject(s, c, p) for s, c, p in itertools.product(SHAPES, COLOUR_NAMES, PATTERNS))


def all_scenes() -> tuple[Scene, ...]:
    """Every scene, in the order background, then position, then size (6 x 3 x 3 = 54)."""
    return tuple(Scene(b, p, z) for b, p, z in itertools.product(BACKGROUND_NAMES, POSITIONS, SIZE_NAMES))
