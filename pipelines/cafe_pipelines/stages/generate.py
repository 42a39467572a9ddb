"""GenerateStage: candidates of a self-improvement round, drawn by a trained checkpoint."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from cafe_core.triple import JPEG_QUALITY
from cafe_pipelines.batch import Batch, column, run_stage
from cafe_pipelines.decoding import read_input_bytes
from cafe_pipelines.threads import set_threads

TORCH_DTYPES = ("float32", "float16", "bfloat16")


def encode_target(image: Image.Image) -> bytes:
    """A generated image as the bytes of a `target.jpg` member (cafe_core.Triple's encoding)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class GenerateStage:
    """Model stage (one trained pipeline per actor).

    In: reference rows (kind "reference"): ref_path, ref_offset, ref_size (the reference cut-out's
    member in an input tar), pairs (JSON [[prompt, seed], ...], the reference's pairs in order).
    Rows of other kinds pass through untouched.
    Out: m_reference (the cut-out's PNG bytes, as read), m_targets (`num_candidates` JPEG bytes per
    pair, pair after pair: each pair's one batch drawn with its seed), scheduler (the sampler's
    class name), t_generate.

    A pair's candidates are always one batch of `num_candidates` with its seed, whatever else the
    row or the Ray batch holds, so the same pair gives the same images on every run.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        num_candidates: int,
        num_steps: int,
        text_guidance: float,
        reference_guidance: float,
        reference_scale: float = 1.0,
        negative_prompt: str = "",
        size_px: int | None = None,
        weights: str = "auto",
        device: str = "cpu",
        dtype: str = "float32",
        num_threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        set_threads(num_threads)
        import torch

        from cafe_model.trained import load_trained_pipeline

        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        self.pipeline, self.checkpoint = load_trained_pipeline(
            checkpoint, weights=weights, device=device, dtype=getattr(torch, dtype), cache_dir=cache_dir
        )
        self.num_candidates = num_candidates
        self.settings = {
            "num_steps": num_steps,
            "text_guidance": text_guidance,
            "reference_guidance": reference_guidance,
            "reference_scale": reference_scale,
            "negative_prompt": negative_prompt,
            "height_px": size_px,
            "width_px": size_px,
        }
        self.scheduler_name = type(self.pipeline.scheduler).__name__

    def generate(self, reference_png: bytes, prompt: str, seed: int) -> list[bytes]:
        """The pair's candidates as target.jpg bytes."""
        with Image.open(io.BytesIO(reference_png)) as opened:
            reference = opened.convert("RGBA")
        images = self.pipeline(reference, prompt, seed=seed, batch_size=self.num_candidates, **self.settings)
        return [encode_target(image) for image in images]

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        batch["m_reference"] = column(batch, "m_reference", b"")
        batch["m_targets"] = column(batch, "m_targets", [])
        batch["scheduler"] = column(batch, "scheduler", "")

        def work(b: Batch, indices: list[int]) -> None:
            for i in indices:
                if b["kind"][i] != "reference":
                    continue
                reference_png = read_input_bytes(str(b["ref_path"][i]), int(b["ref_offset"][i]), int(b["ref_size"][i]))
                b["m_targets"][i] = [
                    target
                    for prompt, seed in json.loads(str(b["pairs"][i]))
                    for target in self.generate(reference_png, prompt, seed)
                ]
                b["m_reference"][i] = reference_png
                b["scheduler"][i] = self.scheduler_name

        return run_stage("generate", batch, work)
