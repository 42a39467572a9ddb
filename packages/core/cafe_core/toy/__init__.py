"""The toy world: procedurally drawn subjects (shape, colour, pattern) in named scenes, with exact masks
and captions, and a fixed held-out split. Pure numpy drawing; no torch (see DESIGN.md,
"The toy world")."""

from cafe_core.toy.caption import GRAMMAR, caption, parse_caption
from cafe_core.toy.render import Rendering, render
from cafe_core.toy.split import (
    SPLIT,
    ToySplit,
    held_out_scene_pairs,
    held_out_subjects,
    in_training,
    is_held_out,
    train_subjects,
)
from cafe_core.toy.world import (
    BACKGROUND_NAMES,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    SIZES,
    Background,
    Hue,
    Scene,
    Size,
    Subject,
    all_scenes,
    all_subjects,
)

__all__ = [
    "BACKGROUNDS",
    "BACKGROUND_NAMES",
    "COLOURS",
    "COLOUR_NAMES",
    "GRAMMAR",
    "PATTERNS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SIZE_NAMES",
    "SPLIT",
    "Background",
    "Hue",
    "Rendering",
    "Scene",
    "Size",
    "Subject",
    "ToySplit",
    "all_scenes",
    "all_subjects",
    "caption",
    "held_out_scene_pairs",
    "held_out_subjects",
    "in_training",
    "is_held_out",
    "parse_caption",
    "render",
    "train_subjects",
]
