"""Scorers: DINO, CLIP-I, CLIP-T, copy-paste and instance counts of generated candidates, in one callable.

The self-improvement round filters its candidates on these, and `cafe eval` reports DINO, CLIP-I
and CLIP-T. A pipeline stage: the models load once in `__init__`; `__call__` scores a batch.

    scorers = Scorers("tiny")                           # or "base" (real weights, local HF cache)
    [score] = scorers([reference_rgba], [image], ["a dog on a beach"], ["a dog"])
    score.scores   # {"dino": 0.71, "clip_i": 0.83, "clip_t": 29.4, "copy_paste": 0.12,
                   #  "num_instances": 1.0, "subject_found": 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cafe_vision.clip_scorer import ClipScorer, clip_t_from_embeddings
from cafe_vision.copy_paste import copy_paste_score, reference_pixels
from cafe_vision.cutout import on_background, subject_cutout
from cafe_vision.dino_embedder import DinoEmbedder
from cafe_vision.images import to_rgb
from cafe_vision.load import load_grounder, load_segmenter
from cafe_vision.scorer_presets import ScorerPreset, ToyScorerPreset, get_scorer_preset
from cafe_vision.subject_finder import FoundSubject, SubjectFinder

SCORE_NAMES = ("dino", "clip_i", "clip_t", "copy_paste", "num_instances", "subject_found")


@dataclass
class CandidateScore:
    """The scores of one candidate image.

    scores: SCORE_NAMES -> float:
        dino: cosine of DINO CLS embeddings, reference cut-out vs the subject found in the image
            (grounded by its phrase, segmented, cut out at the reference's framing; both on the
            same plain background); 0.0 when the subject is not found.
        clip_i: cosine of CLIP image embeddings, reference (on the background) vs the whole image.
        clip_t: CLIP-T, 100 * max(cos, 0) of the image and its prompt (torchmetrics' CLIPScore).
        copy_paste: in [0, 1], 1 = the found subject is the reference's pixels pasted in (see copy_paste).
        num_instances: boxes for the subject above the box threshold, after class-agnostic NMS.
        subject_found: 1.0 when a box passed, else 0.0.
    box_xyxy: the subject found in the image, whole pixels; None if not found.
    mask: bool (H, W) in image coordinates, the found subject; None if not found.
    embedding: (D,) the image's L2-normalized CLIP embedding (what `Scorers.embed_images` gives), for
        near-duplicate checks without embedding the image again.
    """

    scores: dict[str, float]
    box_xyxy: tuple[int, int, int, int] | None
    mask: np.ndarray | None
    embedding: np.ndarray | None = None


class Scorers:
    """Every model the candidate scores need, loaded once.

    Args:
        preset: a scorer preset name (`tiny`, `base`) or a `ScorerPreset`.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: the models' dtype ("float32", "float16", "bfloat16").
        cache_dir: where random models are built (default: the cafe model cache).
        batch_size: the candidates scored per step (bounds memory), the calls' default. Each model
            sees a step in one forward: the grounder and SAM its candidates, CLIP and DINO its
            candidates with its distinct references (per-forward overhead is a large share of a
            small model's cost).

    Attributes:
        models: role (dino, clip, grounder, segmenter) -> {"name", "revision"}, for samples' metadata.
        preset: the resolved `ScorerPreset`.
    """

    def __init__(
        self,
        preset: str | ScorerPreset = "tiny",
        *,
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | Path | None = None,
        batch_size: int = 16,
    ) -> None:
        check_batch_size(batch_size)
        if isinstance(preset, str):
            preset = get_scorer_preset(preset)
        if not isinstance(preset, ScorerPreset):
            if isinstance(preset, ToyScorerPreset):
                raise ValueError(
                    f"scorer preset {preset.name!r} is implemented by cafe_vision.toy_scorers.ToyScorers; load it with"
                    " cafe_vision.load_scorers.load_scorers('toy'), which picks the class for any preset"
                )
            raise TypeError(f"preset must be a scorer preset name or a ScorerPreset, got {type(preset).__name__}")
        self.preset = preset
        self.batch_size = batch_size
        models = {"device": device, "dtype": dtype, "batch_size": 2 * batch_size}
        self.dino_embedder = DinoEmbedder(preset.dino_source(cache_dir=cache_dir), **models)
        self.clip = ClipScorer(preset.clip_source(cache_dir=cache_dir), **models)
        grounder = load_grounder(
            preset.vision,
            device=device,
            cache_dir=cache_dir,
            dtype=dtype,
            box_threshold=preset.box_threshold,
            text_threshold=preset.text_threshold,
            nms_iou_threshold=preset.nms_iou_threshold,
            image_size_px=preset.grounder_image_size_px or preset.vision.grounder_image_size_px,
            batch_size=batch_size,
        )
        segmenter = load_segmenter(
            preset.vision, device=device, cache_dir=cache_dir, dtype=dtype, batch_size=batch_size
        )
        self.finder = SubjectFinder(grounder, segmenter)
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
        """The scores of each candidate `images[i]`, generated for `references[i]`, `prompts[i]`, `subjects[i]`.

        references: RGBA cut-outs (alpha = mask), as a sample's `reference.png`.
        images: the generated images; prompts: their prompts; subjects: the phrase to find in each.
        batch_size: the candidates scored per step (bounds memory); default the Scorers'.
        """
        check_lengths(references=references, images=images, prompts=prompts, subjects=subjects)
        batch_size = self._step(batch_size)
        results: list[CandidateScore] = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            found = self.finder(images[start:stop], subjects[start:stop])
            results.extend(self.score_found(references[start:stop], images[start:stop], prompts[start:stop], found))
        return results

    def score_found(
        self,
        references: Sequence[Image.Image],
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        found: Sequence[FoundSubject],
    ) -> list[CandidateScore]:
        """The scores of candidates whose subjects are already found (`SubjectFinder` output, or given)."""
        check_lengths(references=references, images=images, prompts=prompts, found=found)
        if not images:
            return []
        # A round scores a pair's candidates together: one reference and one prompt for all of them.
        # Each distinct reference, prompt and image is embedded once (CLIP-I, CLIP-T and the returned
        # embedding share the image's).
        ref_rows, unique_refs = distinct(references, key=id)
        prompt_rows, unique_prompts = distinct(prompts, key=lambda prompt: prompt)
        # Candidates and references share one CLIP call (one preprocessing and forward, not two).
        embedded = self.clip.embed_images([*images, *(on_background(reference) for reference in unique_refs)])
        image_embeddings, ref_embeddings = embedded[: len(images)], embedded[len(images) :][ref_rows]
        text_embeddings = self.clip.embed_texts(unique_prompts)[prompt_rows]
        clip_i = (ref_embeddings * image_embeddings).sum(axis=1)
        clip_t = clip_t_from_embeddings(image_embeddings, text_embeddings)
        dino = self._dino_found(references, images, found)
        ref_pixels = [reference_pixels(reference) for reference in unique_refs]
        results = []
        for index, subject in enumerate(found):
            pixels = ref_pixels[ref_rows[index]]
            scores = {
                "dino": float(dino[index]),
                "clip_i": float(clip_i[index]),
                "clip_t": float(clip_t[index]),
                "copy_paste": copy_paste_score(pixels, images[index], subject.box_xyxy, subject.mask),
                "num_instances": float(subject.num_instances),
                "subject_found": 1.0 if subject.found else 0.0,
            }
            results.append(CandidateScore(scores, subject.box_xyxy, subject.mask, image_embeddings[index]))
        return results

    def embed_images(self, images: Sequence[Image.Image], *, batch_size: int | None = None) -> np.ndarray:
        """(N, D) L2-normalized CLIP image embeddings (near-duplicate detection: cosine = dot product)."""
        batch_size = self._step(batch_size)
        return _concat([self.clip.embed_images(chunk) for chunk in _chunks(images, batch_size)], self.clip.dim)

    def clip_t(
        self, images: Sequence[Image.Image], prompts: Sequence[str], *, batch_size: int | None = None
    ) -> np.ndarray:
        """(N,) CLIP-T of each image with its prompt, 100 * max(cos, 0)."""
        check_lengths(images=images, prompts=prompts)
        batch_size = self._step(batch_size)
        pairs = zip(_chunks(images, batch_size), _chunks(prompts, batch_size), strict=True)
        return _concat([self.clip.clip_t(image_chunk, prompt_chunk) for image_chunk, prompt_chunk in pairs])

    def clip_i(
        self, references: Sequence[Image.Image], images: Sequence[Image.Image], *, batch_size: int | None = None
    ) -> np.ndarray:
        """(N,) CLIP image-image cosine, each reference (on the plain background) vs its whole image."""
        check_lengths(references=references, images=images)
        batch_size = self._step(batch_size)
        pairs = zip(_chunks(references, batch_size), _chunks(images, batch_size), strict=True)
        return _concat(
            [self.clip.clip_i([on_background(r) for r in ref_chunk], image_chunk) for ref_chunk, image_chunk in pairs]
        )

    def dino(
        self,
        references: Sequence[Image.Image],
        images: Sequence[Image.Image],
        subjects: Sequence[str],
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """(N,) DINO cosine of each reference and the subject found in its image; 0.0 where not found."""
        check_lengths(references=references, images=images, subjects=subjects)
        batch_size = self._step(batch_size)
        chunks = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            found = self.finder(images[start:stop], subjects[start:stop])
            chunks.append(self._dino_found(references[start:stop], images[start:stop], found))
        return _concat(chunks)

    def _step(self, batch_size: int | None) -> int:
        return call_batch_size(batch_size, self.batch_size)

    def _dino_found(
        self, references: Sequence[Image.Image], images: Sequence[Image.Image], found: Sequence[FoundSubject]
    ) -> np.ndarray:
        scores = np.zeros(len(images), dtype=np.float32)
        indices = [index for index, subject in enumerate(found) if subject.found]
        if not indices:
            return scores
        ref_rows, unique_refs = distinct([references[index] for index in indices], key=id)
        reference_views = [on_background(reference) for reference in unique_refs]
        subject_views = [
            on_background(subject_cutout(to_rgb(images[index]), found[index].mask, found[index].box_xyxy))
            for index in indices
        ]
        embeddings = self.dino_embedder(reference_views + subject_views)
        reference_embeddings = embeddings[: len(unique_refs)][ref_rows]
        subject_embeddings = embeddings[len(unique_refs) :]
        scores[indices] = (reference_embeddings * subject_embeddings).sum(axis=1)
        return scores


def distinct(items: Sequence, key) -> tuple[np.ndarray, list]:
    """(row of each item among the distinct ones, the distinct items in first-seen order)."""
    positions: dict = {}
    rows = [positions.setdefault(key(item), len(positions)) for item in items]
    firsts = {row: item for row, item in zip(rows, items, strict=True)}
    return np.asarray(rows, dtype=np.int64), [firsts[row] for row in range(len(positions))]


def check_lengths(**sequences: Sequence) -> None:
    lengths = {name: len(sequence) for name, sequence in sequences.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{length} {name}" for name, length in lengths.items())
        raise ValueError(f"got {listed}; give one of each per candidate")


def call_batch_size(batch_size: int | None, default: int) -> int:
    """A call's batch size: the one given (checked), or the scorers' own `default`."""
    if batch_size is None:
        return default
    check_batch_size(batch_size)
    return batch_size


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _concat(chunks: list[np.ndarray], dim: int | None = None) -> np.ndarray:
    if not chunks:
        return np.zeros((0,) if dim is None else (0, dim), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)
