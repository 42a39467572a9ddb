"""Validation grids during training: a few references from the training data, generated with the current weights.

    validation = Validation(config)               # the main process only; reads its references once
    path, grid = validation(core_model, step)     # writes RUN/validation/step-000010.png, returns it and the image

A grid has one row per reference: the reference (its cut-out laid on white, fit into a
resolution_px square), then `validation_images_per_reference` generations of the triple's prompt at
resolution_px x resolution_px, by `CustomizationPipeline` (DDIM, `validation_steps` steps, seed
`config.seed`: the same noise at every validation, so the grids of a run show what the weights changed).
The references are the first `validation_samples` triples of the first shard set that are neither
flagged nor in `excluded_keys`.

Validating leaves the training as it was: the pipeline draws its noise from its own CPU generator, the
global RNG states (python, numpy, torch CPU and the model's CUDA device) are saved before and restored
after, so a run with validation logs the losses of one without, and the model's train/eval mode is
restored.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cafe_core import TripleReader, flagged_keys
from cafe_model.customization_model import CustomizationModel
from cafe_model.pipeline import CustomizationPipeline
from cafe_model.reference_encoder import reference_to_rgb
from cafe_train.config import TrainConfig

VALIDATION_DIR = "validation"
BACKGROUND_RGB = (255, 255, 255)


@dataclass(frozen=True)
class ValidationReference:
    key: str
    reference: Image.Image  # the shard's RGBA cut-out
    prompt: str


def validation_references(config: TrainConfig) -> list[ValidationReference]:
    """Up to `validation_samples` unflagged, not excluded triples of the first shard set, in shard order.

    Raises ValueError when the set has none (every triple flagged or excluded)."""
    root = config.shards[0]
    skipped = flagged_keys(root) | set(config.excluded_keys)
    found: list[ValidationReference] = []
    triples = iter(TripleReader(root))
    try:
        for triple in triples:
            if triple.key not in skipped:
                found.append(ValidationReference(triple.key, triple.reference, triple.prompt))
            if len(found) == config.validation_samples:
                break
    finally:
        triples.close()  # stop reading the shard now, not at garbage collection
    if not found:
        raise ValueError(
            f"validate_every={config.validate_every}: shard set {str(root)!r} has no unflagged, not excluded triple"
            " to validate on; put another set first in shards, or set validate_every=None"
        )
    return found


class Validation:
    """Generates and writes a run's validation grids (see the module docstring)."""

    def __init__(self, config: TrainConfig, references: Sequence[ValidationReference] | None = None) -> None:
        self.references = list(references) if references is not None else validation_references(config)
        self.out_dir = config.output_dir / VALIDATION_DIR
        self.size_px = config.resolution_px
        self.images_per_reference = config.validation_images_per_reference
        self.num_steps = config.validation_steps
        self.seed = config.seed

    def grid_size_px(self) -> tuple[int, int]:
        """(width, height) of a grid: one column for the reference plus one per generation, one row per reference."""
        return (1 + self.images_per_reference) * self.size_px, len(self.references) * self.size_px

    def __call__(self, model: CustomizationModel, step: int) -> tuple[Path, Image.Image]:
        """Generate with `model` (the unwrapped model, its current trainable weights) and write the grid of `step`."""
        with preserved_rng_states(model.device), eval_mode(model):
            pipeline = CustomizationPipeline(model)
            rows = []
            for ref in self.references:
                generated = pipeline(
                    ref.reference,
                    ref.prompt,
                    num_steps=self.num_steps,
                    seed=self.seed,
                    height_px=self.size_px,
                    width_px=self.size_px,
                    batch_size=self.images_per_reference,
                )
                rows.append([fit_square(reference_to_rgb(ref.reference, BACKGROUND_RGB), self.size_px), *generated])
        grid = image_grid(rows, self.size_px)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"step-{step:06d}.png"
        # Written aside and renamed: a file named step-*.png is always a whole image.
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        grid.save(temp, format="PNG")
        temp.replace(path)
        return path, grid


def fit_square(image: Image.Image, size_px: int) -> Image.Image:
    """`image` scaled to fit a `size_px` square, centered on the background colour."""
    return ImageOps.pad(image.convert("RGB"), (size_px, size_px), color=BACKGROUND_RGB)


def image_grid(rows: Sequence[Sequence[Image.Image]], cell_px: int) -> Image.Image:
    """Square `cell_px` images in rows, no gaps: (max row length * cell_px) x (number of rows * cell_px)."""
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * cell_px, len(rows) * cell_px), BACKGROUND_RGB)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell.size != (cell_px, cell_px):
                raise ValueError(f"grid cell ({r}, {c}) is {cell.size}, expected {cell_px}x{cell_px}")
            grid.paste(cell, (c * cell_px, r * cell_px))
    return grid


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode inside, back in the mode it was in after (train mode, in the loop)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def preserved_rng_states(device: torch.device) -> Iterator[None]:
    """The python, numpy and torch (CPU, and `device` if CUDA) RNG states inside are undone on the way out.

    The loop's dropout and data streams draw from these; whatever is drawn inside (by a library,
    today or after an upgrade) must not shift them, or a run with validation would train differently.
    """
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
