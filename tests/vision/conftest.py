"""Tiny real vision models, built once per test session into a private model cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cafe_vision.captioner import Captioner
from cafe_vision.grounder import Grounder
from cafe_vision.load import load_captioner, load_grounder, load_segmenter
from cafe_vision.presets import get_preset
from cafe_vision.segmenter import Segmenter


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def captioner(model_cache: Path) -> Captioner:
    return load_captioner(get_preset("tiny"), cache_dir=model_cache)


@pytest.fixture(scope="session")
def grounder(model_cache: Path) -> Grounder:
    # Random weights give random scores: thresholds this low make sure there are boxes to check.
    return load_grounder(get_preset("tiny"), cache_dir=model_cache, box_threshold=0.05, text_threshold=0.05)


@pytest.fixture(scope="session")
def segmenter(model_cache: Path) -> Segmenter:
    return load_segmenter(get_preset("tiny"), cache_dir=model_cache)


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """Real photos of different sizes and orientations (shipped in the scikit-image wheel), downscaled."""
    astronaut = Image.fromarray(data.astronaut()).resize((256, 256))  # square
    chelsea = Image.fromarray(data.chelsea()).resize((300, 200))  # landscape
    coffee = Image.fromarray(data.coffee()).resize((200, 300))  # portrait (the photo turned on its side)
    rocket = Image.fromarray(data.rocket()).resize((160, 240))
    return [astronaut, chelsea, coffee, rocket]


@pytest.fixture(scope="session")
def odd_images() -> list[Image.Image]:
    """Sizes and modes a data engine meets: 1x1, a 1-pixel-high strip, grey, RGBA, palette, 16-bit."""
    sixteen_bit = Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)
    return [
        Image.new("RGB", (1, 1), (200, 10, 10)),
        Image.new("RGB", (700, 1), (10, 200, 10)),
        Image.new("L", (3, 500), 128),
        Image.new("RGBA", (33, 17), (0, 0, 255, 0)),
        Image.new("P", (40, 40)),
        sixteen_bit,
    ]
