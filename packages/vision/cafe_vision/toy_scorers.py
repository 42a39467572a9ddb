"""The `toy` scorer preset: the `Scorers` interface, measured on toy images with exact renderer knowledge.

    scorers = ToyScorers("toy")                    # or cafe_vision.load_scorers.load_scorers("toy")
    [score] = scorers([reference_rgba], [image], ["a small object on the sand, at the left"], ["object"])
    score.scores   # {"dino": 1.0, "clip_i": 1.0, "clip_t": 100.0, "copy_paste": 0.08,
                   #  "num_instances": 1.0, "subject_found": 1.0}

On the toy world (`cafe_core.toy`) the truth behind every image is known: a subject (shape, colour,
pattern) in a scene (background, position, size). DINO and CLIP would only approximate it, so this
preset reads it back from the pixels with `cafe_vision.toy_classifier`, a small CNN trained once on
renderer output (every subject, the held-out ones too, in every scene) and cached. The classifier
never sees what the model under test draws; it is the measuring instrument. The keys keep their
roles in the self-improvement filter and `cafe eval`, with these toy meanings:

    dino           identity agreement: (how many of shape, colour, pattern the classifier reads the same
                   in the reference and in the image) / 3, in {0, 1/3, 2/3, 1}
    clip_i         the cosine of the two 17-dim one-hot identity vectors (shape | colour | pattern). Each has
                   three ones, so the cosine is the number of agreeing attributes / 3: the same number
                   as dino, in cosine form, kept so that filters and tables written for CLIP-I read it
    clip_t         text alignment: 100 * (how many of background and position the classifier reads in the
                   image as `parse_scene(prompt)` names them) / 2, in {0, 50, 100}; a prompt off the toy
                   grammar raises ValueError
    copy_paste     `cafe_vision.copy_paste.copy_paste_score` of the reference against the subject the mask
                   head finds (its mask and box)
    num_instances  connected parts (8-neighbourhood) of the mask head's object pixels with at least
                   `MIN_INSTANCE_PX` pixels at 32 px
    subject_found  1.0 when num_instances >= 1

dino and clip_i are not gated by subject_found (the filter checks subject_found first). The subject
phrases the interface takes are not needed: the classifier reads the main object without words.
The embedding of a candidate (`CandidateScore.embedding`, `embed_images`) is the classifier's
penultimate layer, L2-normalised, for the round's near-duplicate check: one-hot identities would make
every image of a subject a duplicate of every other. `dino_embedder` gives the identity vectors
(L2-normalised), so a dot product of two of them is the identity agreement, as `cafe eval` computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cafe_core.toy import (
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    PATTERNS,
    POSITIONS,
    SCENE_GRAMMAR,
    SHAPES,
    SIZE_NAMES,
    Scene,
    Subject,
    parse_scene,
)
from cafe_vision.compose import box_from_mask
from cafe_vision.copy_paste import copy_paste_score, reference_pixels
from cafe_vision.scorer_presets import ToyScorerPreset, get_scorer_preset
from cafe_vision.scorers import CandidateScore, call_batch_size, check_batch_size, check_lengths, distinct
from cafe_vision.toy_classifier import (
    IDENTITY_HEADS,
    IMAGE_SIZE_PX,
    ToyPredictions,
    identity_vector,
    load_toy_classifier,
)

# The smallest subject the renderer draws (a small star) covers about 28 pixels at 32 px; a part this
# much smaller is a speck of the mask head, not a second object.
MIN_INSTANCE_PX = 12
MASK_THRESHOLD = 0.5
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class EmbeddingSpace:
    """What callers of `Scorers` read from its `.clip`: the width of the image embeddings."""

    name: str
    dim: int


@dataclass(frozen=True)
class ToyReading:
    """What the classifier reads in one image: the main object's subject, the scene, and the object mask.

    mask: bool (H, W) in the image's own size, the largest part (None when no part is big enough);
    box_xyxy: its tight box, exclusive at x1 and y1 (None likewise); num_instances: parts of at
    least `MIN_INSTANCE_PX` pixels at 32 px.
    """

    subject: Subject
    scene: Scene
    num_instances: int
    mask: np.ndarray | None
    box_xyxy: tuple[int, int, int, int] | None


class ToyScorers:
    """The `Scorers` interface on the toy classifier (see the module docstring for what each score means).

    Args:
        preset: "toy" or a `ToyScorerPreset`.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: "float32" only (the classifier is small; lower precision would only blur its readings).
        cache_dir: the model cache the classifier is trained into once (default: the cafe model cache).
        batch_size: images per classifier forward, the calls' default.

    Attributes:
        models: {"classifier": {"name", "revision"}}, for samples' metadata.
        preset: the resolved `ToyScorerPreset`.
        clip: `EmbeddingSpace` whose `dim` is the width of `embed_images` rows.
        classifier: the `ToyClassifier`.
    """

    def __init__(
        self,
        preset: str | ToyScorerPreset = "toy",
        *,
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | Path | None = None,
        batch_size: int = 16,
    ) -> None:
        if isinstance(preset, str):
            resolved = get_scorer_preset(preset)
            if not isinstance(resolved, ToyScorerPreset):
                raise ValueError(
                    f"scorer preset {preset!r} is not a toy preset; use cafe_vision.scorers.Scorers for it, or"
                    " cafe_vision.load_scorers.load_scorers, which picks the class"
                )
            preset = resolved
        elif not isinstance(preset, ToyScorerPreset):
            raise TypeError(f"preset must be 'toy' or a ToyScorerPreset, got {type(preset).__name__}")
        if dtype != "float32":
            raise ValueError(f"dtype={dtype!r}: the toy scorers run in float32; pass dtype='float32'")
        check_batch_size(batch_size)
        self.preset = preset
        self.batch_size = batch_size
        self.classifier = load_toy_classifier(preset.classifier, device=device, cache_dir=cache_dir)
        self.clip = EmbeddingSpace(name=f"{preset.classifier.name} features", dim=self.classifier.net.features_dim)
        self.models: dict[str, dict[str, str]] = preset.model_records()

    def __call__(
        self,
        references: Sequence[Image.Image],
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        subjects: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> list[CandidateScore]:
        """The scores of each candidate `images[i]`, generated for `references[i]` and `prompts[i]`.

        references: RGBA cut-outs (alpha = mask), as a sample's `reference.png`.
        prompts: toy prompts (`cafe_core.toy.SCENE_GRAMMAR`); `subjects`: the phrases (not used, see the
        module docstring). Raises ValueError, before any image is read, for a prompt off the grammar.
        """
        check_lengths(references=references, images=images, prompts=prompts, subjects=subjects)
        scenes = _parse_prompts(prompts)
        step = self._step(batch_size)
        # A round scores a reference's candidates together: each distinct reference is read once.
        ref_rows, unique_refs = distinct(references, id)
        ref_predictions = self.classifier.predict(unique_refs, batch_size=step)
        ref_identity = _unit(identity_vector(ref_predictions.labels))[ref_rows]
        ref_labels = {name: ref_predictions.labels[name][ref_rows] for name in IDENTITY_HEADS}
        ref_pixels = [reference_pixels(reference) for reference in unique_refs]
        predictions = self.classifier.predict(images, batch_size=step)
        readings = _readings(predictions, images)
        identity = _unit(identity_vector(predictions.labels))
        features = _unit(predictions.features)
        results = []
        for index, (image, reading, scene) in enumerate(zip(images, readings, scenes, strict=True)):
            agreeing = sum(int(predictions.labels[name][index] == ref_labels[name][index]) for name in IDENTITY_HEADS)
            scores = {
                "dino": agreeing / len(IDENTITY_HEADS),
                "clip_i": float(identity[index] @ ref_identity[index]),
                "clip_t": _scene_agreement(reading.scene, scene),
                "copy_paste": copy_paste_score(ref_pixels[ref_rows[index]], image, reading.box_xyxy, reading.mask),
                "num_instances": float(reading.num_instances),
                "subject_found": 1.0 if reading.num_instances >= 1 else 0.0,
            }
            results.append(CandidateScore(scores, reading.box_xyxy, reading.mask, features[index]))
        return results

    def read(self, images: Sequence[Image.Image], *, batch_size: int | None = None) -> list[ToyReading]:
        """What the classifier reads in each image (subject, scene, object mask): for reports against the truth."""
        predictions = self.classifier.predict(images, batch_size=self._step(batch_size))
        return _readings(predictions, images)

    def embed_images(self, images: Sequence[Image.Image], *, batch_size: int | None = None) -> np.ndarray:
        """(N, D) L2-normalised classifier features (near-duplicate detection: cosine = dot product)."""
        return _unit(self.classifier.predict(images, batch_size=self._step(batch_size)).features)

    def dino_embedder(self, images: Sequence[Image.Image], *, batch_size: int | None = None) -> np.ndarray:
        """(N, 17) L2-normalised one-hot identities (shape | colour | pattern): the dot product of two
        rows is their identity agreement / 3 (what `cafe eval` computes from `Scorers.dino_embedder`)."""
        return _unit(identity_vector(self.classifier.predict(images, batch_size=self._step(batch_size)).labels))

    def clip_t(
        self, images: Sequence[Image.Image], prompts: Sequence[str], *, batch_size: int | None = None
    ) -> np.ndarray:
        """(N,) 100 * (background and position read in each image that its prompt names) / 2."""
        check_lengths(images=images, prompts=prompts)
        scenes = _parse_prompts(prompts)
        readings = self.read(images, batch_size=batch_size)
        return np.asarray([_scene_agreement(r.scene, s) for r, s in zip(readings, scenes, strict=True)], np.float32)

    def clip_i(
        self, references: Sequence[Image.Image], images: Sequence[Image.Image], *, batch_size: int | None = None
    ) -> np.ndarray:
        """(N,) cosine of the reference's and the image's one-hot identities (= agreeing attributes / 3)."""
        check_lengths(references=references, images=images)
        return (
            self.dino_embedder(references, batch_size=batch_size) * self.dino_embedder(images, batch_size=batch_size)
        ).sum(axis=1)

    def dino(
        self,
        references: Sequence[Image.Image],
        images: Sequence[Image.Image],
        subjects: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """(N,) identity agreement of each reference and its image: agreeing attributes / 3 (`subjects` unused)."""
        check_lengths(references=references, images=images, subjects=subjects)
        step = self._step(batch_size)
        ours = self.classifier.predict(references, batch_size=step).labels
        theirs = self.classifier.predict(images, batch_size=step).labels
        agreeing = sum((ours[name] == theirs[name]).astype(np.float32) for name in IDENTITY_HEADS)
        return np.asarray(agreeing, dtype=np.float32).reshape(len(images)) / len(IDENTITY_HEADS)

    def _step(self, batch_size: int | None) -> int:
        return call_batch_size(batch_size, self.batch_size)


def _parse_prompts(prompts: Sequence[str]) -> list[Scene]:
    scenes = []
    for prompt in prompts:
        try:
            scenes.append(parse_scene(prompt)[1])
        except ValueError as exc:
            raise ValueError(
                f"toy scorers: prompt {prompt!r} is off the toy grammar {SCENE_GRAMMAR!r}; clip_t needs the"
                f" scene it names ({exc})"
            ) from None
    return scenes


def _scene_agreement(read: Scene, named: Scene) -> float:
    return 100.0 * (int(read.background == named.background) + int(read.position == named.position)) / 2


def _readings(predictions: ToyPredictions, images: Sequence[Image.Image]) -> list[ToyReading]:
    readings = []
    for index, image in enumerate(images):
        subject = Subject(
            SHAPES[predictions.labels["shape"][index]],
            COLOUR_NAMES[predictions.labels["colour"][index]],
            PATTERNS[predictions.labels["pattern"][index]],
        )
        scene = Scene(
            BACKGROUND_NAMES[predictions.labels["background"][index]],
            POSITIONS[predictions.labels["position"][index]],
            SIZE_NAMES[predictions.labels["size"][index]],
        )
        num_instances, main = instances(predictions.mask_probability[index] >= MASK_THRESHOLD)
        mask = None if main is None else _to_image_size(main, image.size)
        if mask is not None and not mask.any():  # a part too thin to survive a downscale
            mask = None
        box = None if mask is None else box_from_mask(mask)
        readings.append(ToyReading(subject, scene, num_instances, mask, box))
    return readings


def instances(mask_32: np.ndarray) -> tuple[int, np.ndarray | None]:
    """(parts of `mask_32` with at least `MIN_INSTANCE_PX` pixels, the largest of them or None)."""
    labelled, count = ndimage.label(mask_32, structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return 0, None
    sizes = np.bincount(labelled.ravel(), minlength=count + 1)[1:]
    big = np.flatnonzero(sizes >= MIN_INSTANCE_PX)
    if big.size == 0:
        return 0, None
    return int(big.size), labelled == int(np.argmax(sizes)) + 1


def _to_image_size(mask_32: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    if size_wh == (IMAGE_SIZE_PX, IMAGE_SIZE_PX):
        return mask_32
    resized = Image.fromarray(mask_32.astype(np.uint8) * 255).resize(size_wh, Image.Resampling.NEAREST)
    return np.asarray(resized) >= 128


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)
