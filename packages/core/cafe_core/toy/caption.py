"""Toy captions: one fixed grammar that names everything, and its exact inverse.

Grammar (every word from the vocabularies of `cafe_core.toy.world`, single spaces, no final stop)::

    a {size} {colour} {pattern} {shape} {background phrase}, at the {position}

    size               small | medium | large
    colour             red | orange | yellow | green | cyan | blue | purple | pink
    pattern            solid | striped | dotted          (always named, "solid" too)
    shape              circle | square | triangle | star | ring | cross
    background phrase  on the grass | on the sand | on the snow | under the night sky
                       | in front of the brick wall | on the water
    position           left | centre | right

e.g. "a small red striped star on the sand, at the left". Every size starts with a consonant, so
the article is always "a". `parse_caption(caption(subject, scene)) == (subject, scene)` for every
subject and scene.

Prompts of training triples and evaluation sets name the subject only by a word that carries
none of its identity (`SUBJECT_WORD`, or an identifier such as "sks object" for per-subject
tuning): the reference must carry shape, colour and pattern, so a model that ignores it cannot
draw the subject. `scene_prompt(scene)` writes such a prompt and `parse_scene` reads the scene
back from any prompt of the form

    a {size} {subject words} {background phrase}, at the {position}

e.g. "a small object on the sand, at the left"; the toy scorers check text alignment with it.
"""

from __future__ import annotations

import re

from cafe_core.toy.world import (
    BACKGROUNDS,
    COLOUR_NAMES,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    Scene,
    Subject,
    background,
)

GRAMMAR = "a {size} {colour} {pattern} {shape} {background phrase}, at the {position}"
SCENE_GRAMMAR = "a {size} {subject words} {background phrase}, at the {position}"
# The subject's name in prompts: a class word with no shape, colour or pattern in it.
SUBJECT_WORD = "object"


def caption(subject: Subject, scene: Scene) -> str:
    """The caption of `subject` in `scene`, e.g. "a small red striped star on the sand, at the left"."""
    return f"a {scene.size} {subject.phrase} {background(scene.background).phrase}, at the {scene.position}"


def scene_prompt(scene: Scene, subject_words: str = SUBJECT_WORD) -> str:
    """A prompt naming `scene` that calls the subject `subject_words`: "a small object on the sand, at the left"."""
    if not subject_words.strip() or subject_words != " ".join(subject_words.split()):
        raise ValueError(f"subject_words {subject_words!r}: give one or more words separated by single spaces")
    return f"a {scene.size} {subject_words} {background(scene.background).phrase}, at the {scene.position}"


def _alternatives(words: tuple[str, ...]) -> str:
    return "|".join(re.escape(word) for word in words)


_BACKGROUND_BY_PHRASE = {b.phrase: b.name for b in BACKGROUNDS}
_CAPTION = re.compile(
    rf"a (?P<size>{_alternatives(SIZE_NAMES)}) (?P<colour>{_alternatives(COLOUR_NAMES)})"
    rf" (?P<pattern>{_alternatives(PATTERNS)}) (?P<shape>{_alternatives(SHAPES)})"
    rf" (?P<background>{_alternatives(tuple(_BACKGROUND_BY_PHRASE))}), at the (?P<position>{_alternatives(POSITIONS)})"
)


def parse_caption(text: str) -> tuple[Subject, Scene]:
    """The subject and scene a caption names: the exact inverse of `caption`.

    Raises ValueError quoting the text and the grammar when `text` does not follow it exactly
    (case, spacing and word order included).
    """
    match = _CAPTION.fullmatch(text)
    if match is None:
        raise ValueError(f"toy caption {text!r} does not follow the grammar {GRAMMAR!r} (see cafe_core.toy.caption)")
    subject = Subject(match["shape"], match["colour"], match["pattern"])
    scene = Scene(_BACKGROUND_BY_PHRASE[match["background"]], match["position"], match["size"])
    return subject, scene


_SCENE = re.compile(
    rf"a (?P<size>{_alternatives(SIZE_NAMES)}) (?P<subject>\S+(?: \S+)*?)"
    rf" (?P<background>{_alternatives(tuple(_BACKGROUND_BY_PHRASE))}), at the (?P<position>{_alternatives(POSITIONS)})"
)


def parse_scene(text: str) -> tuple[str, Scene]:
    """(subject words, scene) of a prompt of the form `SCENE_GRAMMAR`; full captions parse too.

    Raises ValueError quoting the text and the grammar when it does not follow the form.
    """
    match = _SCENE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"toy prompt {text!r} does not follow {SCENE_GRAMMAR!r} (see cafe_core.toy.caption), "
            f"e.g. {scene_prompt(Scene('sand', 'left', 'small'))!r}"
        )
    scene = Scene(_BACKGROUND_BY_PHRASE[match["background"]], match["position"], match["size"])
    return match["subject"], scene
