"""The prompts a self-improvement round pairs with each reference.

A reference's bank is DreamBench's 25 prompts for its kind of subject (live subjects get the
outfit and accessory prompts, objects the scene and material ones; DreamBooth's
`prompts_and_classes.txt`, with the identifier and class folded into the subject phrase), then
rewrites of the reference's own caption with its scene swapped for another. Indices into the
bank are stable (DreamBench first, rewrites after), so a prompt index names one prompt for a
given subject and caption, and `pick_prompts` draws the same indices for the same seed and key.

    bank = prompt_bank("brown dog", "a brown dog sitting on a couch")
    picked = pick_prompts("brown dog", "a brown dog sitting on a couch", 4, seed=0, reference_key="00ab...")

A toy-world reference (`cafe data toy`, or a round over its sets) has a caption in the toy grammar
(`cafe_core.toy`), and its bank is the toy world's own: `scene_prompt` of every scene, in the world's
order. When the caption names the subject ("a small red striped star on the sand, at the left"), the
scenes the fixed split holds out for it (`cafe_core.toy.in_training`) are left out, so a round never asks
for a held-out pair; a round's own samples are captioned with their prompt ("a small object on the
sand, at the left"), which no longer names the subject, and get every scene.
"""

from __future__ import annotations

import hashlib
import random
import re

from cafe_core.toy import all_scenes, in_training, parse_caption, parse_scene, scene_prompt
from cafe_vision.subject import head_noun

# DreamBench's prompt lists: the two share their first ten (scenes) and last five (attributes).
_SCENE_PROMPTS = (
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
)

_ATTRIBUTE_PROMPTS = (
    "a red {}",
    "a purple {}",
    "a shiny {}",
    "a wet {}",
    "a cube shaped {}",
)

OBJECT_PROMPTS = (
    *_SCENE_PROMPTS,
    "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water",
    "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it",
    "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street",
    "a {} on top of a dirt road",
    "a {} on top of a white rug",
    *_ATTRIBUTE_PROMPTS,
)

LIVE_PROMPTS = (
    *_SCENE_PROMPTS,
    "a {} wearing a red hat",
    "a {} wearing a santa hat",
    "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle",
    "a {} in a chef outfit",
    "a {} in a firefighter outfit",
    "a {} in a police outfit",
    "a {} wearing pink glasses",
    "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
    *_ATTRIBUTE_PROMPTS,
)

# Head nouns of live subjects (DreamBench's are dogs and cats; people and common animals added).
LIVE_SUBJECTS = frozenset(
    "dog puppy cat kitten person man woman boy girl child kid baby people lady guy astronaut player "
    "bird parrot owl duck chicken horse pony cow sheep goat pig rabbit bunny bear panda monkey lion "
    "tiger elephant giraffe zebra fox wolf deer squirrel mouse hamster".split()
)
# Words that make a live head noun an object ("teddy bear", "toy dog", "dog statue").
OBJECT_MODIFIERS = frozenset("toy stuffed teddy plush statue figurine sculpture plastic wooden ceramic robot".split())

# The scenes a caption rewrite puts the subject in instead of its own.
REWRITE_SCENES = (
    "on a sandy beach at sunset",
    "in a snowy forest",
    "on a kitchen counter",
    "on a city street at night",
    "on a grassy hill under a blue sky",
    "in a cozy living room",
    "on a desert road",
    "next to a mountain lake",
)

_SPACES = re.compile(r"\s+")


def is_live_subject(subject: str) -> bool:
    """Whether the subject phrase names a person or an animal (by its head noun)."""
    words = subject.lower().split()
    return bool(words) and head_noun(" ".join(words)) in LIVE_SUBJECTS and not OBJECT_MODIFIERS & set(words)


def rewrite_caption(caption: str, subject: str, scene: str) -> str:
    """The caption up to and including the subject phrase, then `scene` in place of the rest.

    "a red cube on a noisy table", "red cube", "in the snow" -> "a red cube in the snow". A caption
    that does not name the subject gives "a photo of the {subject} {scene}".
    """
    caption = _SPACES.sub(" ", caption).strip()
    match = re.search(rf"\b{re.escape(subject.lower())}\b", caption.lower()) if subject.strip() else None
    if match is None:
        return f"a photo of the {subject} {scene}"
    return f"{caption[: match.end()]} {scene}"


def toy_bank(caption: str) -> list[str] | None:
    """The toy world's bank for a toy-grammar caption (see the module docstring); None for any other caption."""
    try:
        subject, _ = parse_caption(caption)
    except ValueError:
        try:
            parse_scene(caption)
        except ValueError:
            return None
        return [scene_prompt(scene) for scene in all_scenes()]
    return [scene_prompt(scene) for scene in all_scenes() if in_training(subject, scene.background)]


def prompt_bank(subject: str, caption: str) -> list[str]:
    """Every prompt for one reference: DreamBench's 25 for its kind, then one caption rewrite per scene
    (the toy world's scene prompts for a toy caption)."""
    toy = toy_bank(caption)
    if toy is not None:
        return toy
    templates = LIVE_PROMPTS if is_live_subject(subject) else OBJECT_PROMPTS
    return [t.format(subject) for t in templates] + [rewrite_caption(caption, subject, s) for s in REWRITE_SCENES]


def _rng(seed: int, reference_key: str) -> random.Random:
    digest = hashlib.sha256(f"prompts\x00{seed}\x00{reference_key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pick_prompts(subject: str, caption: str, count: int, *, seed: int, reference_key: str) -> list[tuple[int, str]]:
    """`count` distinct (bank index, prompt) of the reference's bank, in index order; the same for the same
    seed and reference key. All of the bank when `count` is larger."""
    if count < 1:
        raise ValueError(f"count: {count} must be >= 1")
    bank = prompt_bank(subject, caption)
    indices = sorted(_rng(seed, reference_key).sample(range(len(bank)), min(count, len(bank))))
    return [(i, bank[i]) for i in indices]
