"""Toy-world evaluation: how much of its reference's identity, and of its prompt's scene, a model draws.

    result = toy_evaluate(pipeline, ToyScorers("toy"), "toy/eval", images_per_prompt=2)
    result.conditions["reference"]["identity"]      # 0.93: shape, colour, pattern drawn as referenced
    result.conditions["no_reference"]["identity"]   # 0.21: what the prompt alone gives (chance is 0.21)

It reads the held-out set `cafe data toy` writes (`DIR/eval`: per subject an RGBA cut-out
`00-reference.png`, and `subjects.json` with each subject's true shape, colour and pattern) and draws
`images_per_prompt` images for every subject and test prompt under three conditions:

    reference        the subject's own reference, at reference_scale 1
    no_reference     the null reference (the "no reference" reference dropout trains; the pipeline's
                     `reference_image=None`): the text alone, and the prompt's word is "object", so it
                     names no identity. Not reference_scale 0: a model whose UNet trained with the
                     reference attention always on draws off its training there.
    other_reference  another held-out subject's reference, scale 1: the next one in the set (cyclically)
                     that differs from the subject in shape, colour and pattern all three

and reads every image with the toy classifier (`ToyScorers.read`). The numbers are exact agreements
with the renderer's truth, not embedding similarities:

    identity   (shape, colour and pattern read as those of the subject whose reference was *given*
               (for no_reference, the subject's own)) / 3; chance (`CHANCE_IDENTITY`) is 0.21
    own        the same against the evaluated subject, whatever was given: for other_reference it shows
               that the model follows the reference, not the prompt
    text       (background and position read as the prompt names them) / 2; chance 0.25
    shape, colour, pattern, background, position: each attribute's agreement alone

Every condition draws with the same seed, so the images of two conditions differ only by what they
condition on. `cafe eval` measures the same model the DreamBench way (DINO/CLIP means against photos);
this is the toy world's own instrument.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cafe_core.eval_layout import SUBJECTS_JSON_NAME
from cafe_core.toy import BACKGROUND_NAMES, COLOUR_NAMES, PATTERNS, POSITIONS, SHAPES, Subject, parse_scene
from cafe_pipelines.evaluate import EvalSet, read_eval_set
from cafe_vision.toy_scorers import ToyScorers

CONDITIONS = ("reference", "no_reference", "other_reference")
IDENTITY_ATTRIBUTES = ("shape", "colour", "pattern")
SCENE_ATTRIBUTES = ("background", "position")
# Uniform guesses: shape 1/6, colour 1/8, pattern 1/3 (identity); background 1/6, position 1/3 (text).
CHANCE_IDENTITY = (1 / len(SHAPES) + 1 / len(COLOUR_NAMES) + 1 / len(PATTERNS)) / 3
CHANCE_TEXT = (1 / len(BACKGROUND_NAMES) + 1 / len(POSITIONS)) / 2

ProgressHook = Callable[[str, int, int], None]  # (condition, images done, images in all)


@dataclass
class ToyEvalResult:
    """Per condition, the mean of each number over every image (each subject weighs the same)."""

    conditions: dict[str, dict[str, float]]
    settings: dict[str, Any] = field(default_factory=dict)
    # One grid row per subject and condition: (condition, subject, images), for pictures.
    samples: list[tuple[str, str, list[Image.Image]]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"conditions": self.conditions, "settings": self.settings}


@dataclass(frozen=True)
class _ToySubject:
    name: str
    subject: Subject
    reference: Image.Image


def read_toy_subjects(eval_set: EvalSet) -> list[_ToySubject]:
    """The held-out subjects with their truth and reference; ValueError for a set `cafe data toy` did not write."""
    path = eval_set.root / SUBJECTS_JSON_NAME
    entries = json.loads(path.read_text()) if path.is_file() else {}
    subjects = []
    for item in eval_set.subjects:
        entry = entries.get(item.name, {})
        missing = [name for name in IDENTITY_ATTRIBUTES if name not in entry]
        if missing:
            raise ValueError(
                f"{path}: subject {item.name!r} has no {', '.join(missing)}; the toy evaluation reads the truth"
                " that `cafe data toy` writes there (make it with `cafe data toy --output DIR`, then give DIR/eval)"
            )
        with Image.open(item.image_paths[0]) as image:
            reference = image.convert("RGBA")
        subjects.append(_ToySubject(item.name, Subject(entry["shape"], entry["colour"], entry["pattern"]), reference))
    if len(subjects) < 2:
        raise ValueError(f"{eval_set.root}: {len(subjects)} subject; other_reference needs at least 2")
    return subjects


def _other(subjects: list[_ToySubject], index: int) -> _ToySubject:
    """The next subject after `index` (cyclically) that shares no identity attribute with it, else the next one."""
    mine = subjects[index].subject
    following = [subjects[(index + step) % len(subjects)] for step in range(1, len(subjects))]
    unlike = [o for o in following if all(getattr(o.subject, n) != getattr(mine, n) for n in IDENTITY_ATTRIBUTES)]
    return (unlike or following)[0]


def toy_evaluate(
    pipeline: Any,
    scorers: ToyScorers,
    eval_set: str | Path | EvalSet,
    *,
    images_per_prompt: int = 2,
    num_steps: int = 20,
    text_guidance: float = 7.5,
    reference_guidance: float = 7.5,
    seed: int = 0,
    conditions: tuple[str, ...] = CONDITIONS,
    max_subjects: int | None = None,
    on_progress: ProgressHook | None = None,
) -> ToyEvalResult:
    """Draw and read the images of every condition (see the module docstring); the same arguments, the same numbers."""
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or not conditions:
        raise ValueError(f"conditions: {unknown or 'none'}; choose from {', '.join(CONDITIONS)}")
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"images_per_prompt={images_per_prompt!r}: must be an integer >= 1")
    if not isinstance(eval_set, EvalSet):
        eval_set = read_eval_set(eval_set)
    subjects = read_toy_subjects(eval_set)
    if max_subjects is not None:
        subjects = subjects[:max_subjects]
    prompts = eval_set.prompts["object"]
    scenes = [parse_scene(prompt.format("object"))[1] for prompt in prompts]  # ValueError: off the toy grammar
    total = len(conditions) * len(subjects) * len(prompts) * images_per_prompt
    began, done = time.perf_counter(), 0
    per_condition: dict[str, dict[str, float]] = {}
    samples: list[tuple[str, str, list[Image.Image]]] = []
    for condition in conditions:
        agree: dict[str, list[float]] = {name: [] for name in (*IDENTITY_ATTRIBUTES, *SCENE_ATTRIBUTES, "own")}
        for index, item in enumerate(subjects):
            given = _other(subjects, index) if condition == "other_reference" else item
            reference = None if condition == "no_reference" else given.reference
            row: list[Image.Image] = []
            for prompt, scene in zip(prompts, scenes, strict=True):
                if on_progress is not None:
                    on_progress(condition, done, total)
                images = pipeline(
                    reference,
                    prompt.format("object"),
                    num_steps=num_steps,
                    text_guidance=text_guidance,
                    reference_guidance=reference_guidance,
                    seed=seed,
                    batch_size=images_per_prompt,
                )
                for reading in scorers.read(images):
                    for name in IDENTITY_ATTRIBUTES:
                        agree[name].append(float(getattr(reading.subject, name) == getattr(given.subject, name)))
                    agree["own"].append(
                        float(
                            np.mean(
                                [getattr(reading.subject, n) == getattr(item.subject, n) for n in IDENTITY_ATTRIBUTES]
                            )
                        )
                    )
                    for name in SCENE_ATTRIBUTES:
                        agree[name].append(float(getattr(reading.scene, name) == getattr(scene, name)))
                row.extend(images[:1])
                done += len(images)
            samples.append((condition, item.name, row))
        means = {name: float(np.mean(values)) for name, values in agree.items()}
        means["identity"] = float(np.mean([means[name] for name in IDENTITY_ATTRIBUTES]))
        means["text"] = float(np.mean([means[name] for name in SCENE_ATTRIBUTES]))
        means["num_images"] = float(len(agree["own"]))
        per_condition[condition] = means
    settings = {
        "eval_set": str(eval_set.root),
        "subjects": len(subjects),
        "prompts": len(prompts),
        "images_per_prompt": images_per_prompt,
        "num_steps": num_steps,
        "text_guidance": text_guidance,
        "reference_guidance": reference_guidance,
        "seed": seed,
        "chance": {"identity": CHANCE_IDENTITY, "text": CHANCE_TEXT},
        "scorer_models": scorers.models,
        "wall_s": round(time.perf_counter() - began, 3),
    }
    return ToyEvalResult(per_condition, settings, samples)
