"""Fixtures of the training service's tests: data roots with tiny real inputs, a private model cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_triple, ok_input
from PIL import Image
from skimage import data

from cafe_core import ShardSet

PHOTOS = ("astronaut", "coffee")


@pytest.fixture(scope="session", autouse=True)
def service_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Jobs inherit the service's environment: random presets go to a private cache, never ~/.cache."""
    cache = tmp_path_factory.mktemp("service-models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAFE_MODEL_CACHE", str(cache))
        patch.delenv("RAY_ADDRESS", raising=False)
        patch.delenv("CAFE_SERVICE_TOKEN", raising=False)
        patch.delenv("CAFE_SERVICE_URL", raising=False)
        yield cache


def write_photos(folder: Path, names: tuple[str, ...] = PHOTOS, max_side_px: int = 160) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((max_side_px, max_side_px))
        image.save(folder / f"{name}.jpg", quality=90)
    return folder


def write_shards(root: Path, count: int = 4) -> Path:
    """A closed set of `count` tiny triples, 2 per shard."""
    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=2) as writer:
        for index in range(count):
            triple = make_triple(index)
            writer.add(ok_input(triple), [triple])
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with `photos/` (2 images) and `triples/` (a tiny shard set), and `outside/` beside it."""
    base = tmp_path_factory.mktemp("service-data")
    root = base / "root"
    write_photos(root / "photos")
    write_shards(root / "triples")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for jobs")
    os.symlink(outside, root / "link-out")
    return root
