"""Tiny real customization models (random SD + CLIP vision / DINOv2), built once per session into a private cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_helpers import perturb_trainable
from PIL import Image
from skimage import data

from cafe_model.customization_model import CustomizationModel
from cafe_model.load import load_model


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def tiny_model(model_cache: Path) -> CustomizationModel:
    """The `tiny` preset as loaded (fresh projector, reference k/v equal to the text ones). Do not modify it."""
    return load_model("tiny", cache_dir=model_cache)


@pytest.fixture(scope="session")
def trained_tiny_model(model_cache: Path) -> CustomizationModel:
    """A `tiny` model whose trainable weights moved away from their init (as after training)."""
    return perturb_trainable(load_model("tiny", cache_dir=model_cache), seed=1)


@pytest.fixture(scope="session")
def trained_tiny_dinov2_model(model_cache: Path) -> CustomizationModel:
    """A `tiny-dinov2` model (DINOv2 tokens + perceiver resampler: cafe's own export format), moved off its init."""
    return perturb_trainable(load_model("tiny-dinov2", cache_dir=model_cache), seed=2)


@pytest.fixture(scope="session")
def reference_photo() -> Image.Image:
    """A real photo (scikit-image's cat), not square, so the encoder's resize and crop are exercised."""
    return Image.fromarray(data.chelsea()).resize((60, 40))


@pytest.fixture(scope="session")
def other_photo() -> Image.Image:
    return Image.fromarray(data.coffee()).resize((40, 60))
