"""The toy world's fixed train / held-out split. It depends on no seed and never changes: a changed
split would make every earlier held-out figure meaningless.

Held-out subjects: with i, j, k the indices of a subject's shape, colour and pattern in `SHAPES`,
`COLOUR_NAMES` and `PATTERNS`, the subject is held out when (i + j + k) % 5 == 0 (a Latin-square-like
diagonal). That holds out 28 of the 144 subjects (19.4 %), and for any two of the three attributes
at most one value of the third is held out, so every shape, colour and pattern, and every pair of
them (a red star, a striped star, a red striped anything), still appears in training: a held-out
subject is a new combination of known parts.

Held-out scene pairs: `HELD_OUT_SCENE_PAIRS`, one training subject per background that is never
rendered on that background in training data (it is on every other background), to measure a known
subject in a new scene. Training data must use only pairs that `in_training(subject, background)`
allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from cafe_core.toy.world import BACKGROUND_NAMES, COLOUR_NAMES, PATTERNS, SHAPES, Subject, all_subjects

_MODULUS = 5

HELD_OUT_SCENE_PAIRS: tuple[tuple[str, Subject], ...] = (
    ("grass", Subject("star", "yellow", "dotted")),
    ("sand", Subject("cross", "blue", "striped")),
    ("snow", Subject("circle", "red", "striped")),
    ("night_sky", Subject("ring", "orange", "dotted")),
    ("brick_wall", Subject("triangle", "cyan", "dotted")),
    ("water", Subject("square", "pink", "solid")),
)


def _on_the_diagonal(subject: Subject) -> bool:
    indices = SHAPES.index(subject.shape) + COLOUR_NAMES.index(subject.colour) + PATTERNS.index(subject.pattern)
    return indices % _MODULUS == 0


@dataclass(frozen=True)
class ToySplit:
    """Train subjects, held-out subjects and held-out (background, subject) pairs; see the module doc."""

    train_subjects: tuple[Subject, ...]
    held_out_subjects: tuple[Subject, ...]
    held_out_scene_pairs: tuple[tuple[str, Subject], ...]

    def __post_init__(self) -> None:
        overlap = set(self.train_subjects) & set(self.held_out_subjects)
        if overlap:
            raise ValueError(f"ToySplit: subjects both in training and held out: {sorted(s.phrase for s in overlap)}")
        for name, subject in self.held_out_scene_pairs:
            if name not in BACKGROUND_NAMES or subject not in self.train_subjects:
                raise ValueError(
                    f"ToySplit: held-out scene pair ({name!r}, {subject.phrase!r}) must name a background and a "
                    "training subject"
                )

    @classmethod
    def fixed(cls) -> ToySplit:
        """The one split of the toy world."""
        subjects = all_subjects()
        return cls(
            train_subjects=tuple(s for s in subjects if not _on_the_diagonal(s)),
            held_out_subjects=tuple(s for s in subjects if _on_the_diagonal(s)),
            held_out_scene_pairs=HELD_OUT_SCENE_PAIRS,
        )

    def is_held_out(self, subject: Subject) -> bool:
        return subject in self.held_out_subjects

    def in_training(self, subject: Subject, background: str) -> bool:
        """Whether training data may show `subject` on `background`."""
        return not self.is_held_out(subject) and (background, subject) not in self.held_out_scene_pairs


SPLIT = ToySplit.fixed()


def is_held_out(subject: Subject) -> bool:
    """Whether `subject` is a held-out subject (never in training data, on any background)."""
    return SPLIT.is_held_out(subject)


def in_training(subject: Subject, background: str) -> bool:
    """Whether training data may show `subject` on `background` (a training subject, not a held-out pair)."""
    return SPLIT.in_training(subject, background)


def train_subjects() -> tuple[Subject, ...]:
    return SPLIT.train_subjects


def held_out_subjects() -> tuple[Subject, ...]:
    return SPLIT.held_out_subjects


def held_out_scene_pairs() -> tuple[tuple[str, Subject], ...]:
    return SPLIT.held_out_scene_pairs
