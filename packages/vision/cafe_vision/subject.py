"""Finding the main subject of a caption, without a language model.

Captioners write short, regular English ("a small brown dog sitting on a couch", "a close up of
a red mug on a table"). The main subject is the first noun phrase after framing words ("a
photo of", "a close up of"): the words up to the first preposition, verb or conjunction, less
determiners and numbers. The other noun phrases go into the grounding prompt too, so that the
grounder can tell the subject from the things around it; the detection kept is the best one
whose phrase names the subject's head noun.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_PHRASE_WORDS = 4

# Framing that precedes the real subject in captions ("a photo of a dog" -> "dog").
FRAMING = (
    "there is",
    "there are",
    "this is",
    "it is",
    "close up of",
    "closeup of",
    "close-up of",
    "photo of",
    "photograph of",
    "picture of",
    "image of",
    "view of",
    "painting of",
    "drawing of",
    "illustration of",
    "rendering of",
    "shot of",
    "group of",
    "couple of",
    "pair of",
    "bunch of",
    "kind of",
)
DETERMINERS = frozenset(
    "a an the this that these those his her its their our my your some several many two three four five "
    "six seven eight nine ten one few other another each".split()
)
# Words that end a noun phrase: prepositions, conjunctions, common verbs, relative pronouns.
BOUNDARIES = frozenset(
    "on in at with of near by under over behind next to from into onto against beside besides above below "
    "across along around through inside outside between among and or but while that which who whose is "
    "are was were be being has have had sits sit stands stand lies lie looks look holds hold for as "
    "during after before up down out off".split()
)
# BLIP's well-known filler tokens for people/animals it cannot name.
NOISE = frozenset({"arafed", "araffe", "arafe", "araffed", "there"})
# Nouns that end in -ing, which would otherwise be read as verbs (phrase boundaries).
ING_NOUNS = frozenset(
    "building painting ceiling clothing wedding evening morning railing awning pudding dumpling swing "
    "string wing king ring sling icing frosting bedding drawing stocking earring sibling duckling "
    "seedling".split()
)
# Nouns of place and time in "in front of", "at night": never a subject to ground.
PLACE_WORDS = frozenset("front top bottom side middle background foreground night day left right back edge".split())
_WORD = re.compile(r"[a-z][a-z'-]*")


def _words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def _strip_framing(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for frame in FRAMING:
            match = re.search(rf"\b{re.escape(frame)}\b", text)
            # Only framing near the start counts ("a photo of ..."), not "a cup of coffee".
            if match and len(text[: match.start()].split()) <= 2:
                text = text[match.end() :]
                changed = True
    return text


def _clean(phrase: list[str]) -> str:
    words = [w for w in phrase if w not in DETERMINERS and w not in NOISE]
    return " ".join(words[-MAX_PHRASE_WORDS:])  # the head noun comes last in English phrases


def noun_phrases(caption: str) -> list[str]:
    """Noun phrases of a caption, main subject first, duplicates dropped."""
    words = _words(_strip_framing(" ".join(_words(caption))))
    phrases, current = [], []
    for word in words:
        if word in BOUNDARIES or (word.endswith("ing") and len(word) > 4 and word not in ING_NOUNS):
            if current:
                phrases.append(_clean(current))
            current = []
        else:
            current.append(word)
    if current:
        phrases.append(_clean(current))
    seen, result = set(), []
    for phrase in phrases:
        if phrase and phrase not in seen and phrase not in PLACE_WORDS:
            seen.add(phrase)
            result.append(phrase)
    return result


def main_subject(caption: str) -> str | None:
    """The caption's main subject phrase, or None when the caption names nothing."""
    phrases = noun_phrases(caption)
    return phrases[0] if phrases else None


def grounding_prompt(phrases: Sequence[str]) -> str:
    """Grounding DINO's prompt format: lowercase phrases, each ended by a dot."""
    return " ".join(f"{p}." for p in phrases)


def head_noun(phrase: str) -> str:
    words = phrase.split()
    return words[-1] if words else ""


def names_subject(detected_phrase: str, subject: str) -> bool:
    """Whether a grounded phrase names the subject: it contains the subject's head noun."""
    head = head_noun(subject)
    return bool(head) and head in detected_phrase.lower().split()


@dataclass(frozen=True)
class SubjectQuery:
    """What to ask the grounder for one caption."""

    subject: str
    phrases: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return grounding_prompt(self.phrases)


def subject_query(caption: str, max_phrases: int = 4) -> SubjectQuery | None:
    phrases = noun_phrases(caption)[:max_phrases]
    if not phrases:
        return None
    return SubjectQuery(subject=phrases[0], phrases=tuple(phrases))
