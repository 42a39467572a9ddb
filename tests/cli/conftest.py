"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def private_model_cache(model_cache: Path, one_torch_thread: None) -> Iterator[Path]:
    """Commands build random presets into the session's private cache (CAFE_MODEL_CACHE), so ~/.cache is
    never touched, on one torch thread (tiny models are all overhead)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAFE_MODEL_CACHE", str(model_cache))
        yield model_cache
