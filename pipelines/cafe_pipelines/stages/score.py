"""ScoreStage: scores, found subject and embedding of each candidate; embeddings of the references' sources."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cafe_pipelines.batch import Batch, column, run_stage
from cafe_pipelines.decoding import read_input_bytes
from cafe_pipelines.threads import set_threads
from cafe_vision.compose import mask_image

SCORE_DECIMALS = 6  # what the filter judges and the json records; also hides last-bit noise


def _open(data: bytes, mode: str) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.convert(mode)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def embedding_bytes(embeddings: np.ndarray) -> bytes:
    return np.ascontiguousarray(embeddings, dtype="<f4").tobytes()


def embeddings_from_bytes(data: bytes, count: int) -> np.ndarray:
    """(count, D) float32 from `embedding_bytes`."""
    flat = np.frombuffer(data, dtype="<f4")
    return flat.reshape(count, -1) if count else flat.reshape(0, 0)


class ScoreStage:
    """Model stage (one `cafe_vision.scorers.Scorers` per actor).

    Reference rows (kind "reference") in: m_reference, m_targets (a reference's candidates, pair
    after pair), pairs (JSON [[prompt, seed], ...]), subject. Out: c_scores (JSON list, one score
    dict per candidate, rounded to SCORE_DECIMALS), c_boxes (JSON list of [x0, y0, x1, y1] or
    null), m_masks (a mask.png per candidate, b"" where nothing was found), c_embeddings (float32
    bytes, one L2-normalized row per candidate).
    Source rows (kind "source") in: sources (JSON [[path, offset, size], ...], source targets of
    references in input tars). Out: c_embeddings (one row per source read, in order), c_errors (JSON
    list, per source: "" or why it could not be read; one bad source costs only its own embedding).
    Both: t_score.

    Candidates are scored from the decoded JPEG bytes (what the shard will hold), and a reference's
    candidates are scored together in one call (in steps of `batch_size`), a source row's sources
    likewise: the scorers' numbers depend on what shares their batch, so this keeps every number
    the same on every run, however Ray batches rows. A reference's candidates also share their
    subject phrase, so Grounding DINO's text batch (padded to its longest) is the same for all.
    """

    def __init__(
        self,
        preset: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        num_threads: int | None = None,
        cache_dir: str | Path | None = None,
        batch_size: int = 16,
    ) -> None:
        set_threads(num_threads)
        from cafe_vision.load_scorers import load_scorers

        self.scorers = load_scorers(preset, device=device, dtype=dtype, cache_dir=cache_dir, batch_size=batch_size)

    def score_reference(
        self, reference_png: bytes, targets: list[bytes], prompts: list[str], subject: str
    ) -> dict[str, object]:
        """The outputs of one reference row (see the class docstring), as a dict of column values.

        `targets` are the candidates of the reference's pairs, pair after pair, an equal number per
        prompt of `prompts`.
        """
        if not prompts or len(targets) % len(prompts):
            raise ValueError(f"{len(targets)} candidates do not split evenly over {len(prompts)} prompts")
        reference = _open(reference_png, "RGBA")
        images = [_open(data, "RGB") for data in targets]
        count, per_prompt = len(images), len(targets) // len(prompts)
        candidate_prompts = [prompt for prompt in prompts for _ in range(per_prompt)]
        results = self.scorers([reference] * count, images, candidate_prompts, [subject] * count)
        masks, boxes = [], []
        for image, result in zip(images, results, strict=True):
            if result.mask is None or result.box_xyxy is None:
                masks.append(b"")
                boxes.append(None)
                continue
            if result.mask.shape != (image.height, image.width):
                raise ValueError(f"mask of shape {result.mask.shape} for a {image.width}x{image.height} image")
            masks.append(_png(mask_image(np.asarray(result.mask, dtype=bool))))
            boxes.append([int(v) for v in result.box_xyxy])
        scores = [{name: round(float(v), SCORE_DECIMALS) for name, v in r.scores.items()} for r in results]
        # The scorers embedded each image already (CLIP-I, CLIP-T): the near-duplicate check reuses it.
        embeddings = np.stack([r.embedding for r in results]) if results else np.zeros((0, self.scorers.clip.dim))
        return {
            "c_scores": json.dumps(scores),
            "c_boxes": json.dumps(boxes),
            "m_masks": masks,
            "c_embeddings": embedding_bytes(embeddings),
        }

    def embed_sources(self, locations: list[list]) -> dict[str, object]:
        """The outputs of one source row: c_embeddings of the sources read, c_errors per source."""
        images, errors = [], []
        for path, offset, size in locations:
            try:
                images.append(_open(read_input_bytes(str(path), int(offset), int(size)), "RGB"))
                errors.append("")
            except Exception as exc:  # recorded per source; the others are embedded
                errors.append(f"{type(exc).__name__}: {exc}")
        embeddings = self.scorers.embed_images(images, batch_size=max(1, len(images)))
        return {"c_embeddings": embedding_bytes(embeddings), "c_errors": json.dumps(errors)}

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        fills = (("c_scores", "[]"), ("c_boxes", "[]"), ("m_masks", []), ("c_embeddings", b""), ("c_errors", "[]"))
        for name, fill in fills:
            batch[name] = column(batch, name, fill)

        def work(b: Batch, indices: list[int]) -> None:
            for i in indices:
                if b["kind"][i] == "source":
                    outputs = self.embed_sources(json.loads(str(b["sources"][i])))
                else:
                    outputs = self.score_reference(
                        bytes(b["m_reference"][i]),
                        [bytes(t) for t in b["m_targets"][i]],
                        [prompt for prompt, _ in json.loads(str(b["pairs"][i]))],
                        str(b["subject"][i]),
                    )
                for name, value in outputs.items():
                    b[name][i] = value

        batch = run_stage("score", batch, work)
        # Ray hands list columns back as object arrays, which Arrow cannot take: lists of bytes again.
        batch["m_targets"] = [[bytes(t) for t in targets] for targets in batch["m_targets"]]
        return batch
