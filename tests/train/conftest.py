"""Tiny real shard sets and a private model cache for the training tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from train_helpers import write_shard_set


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models are all overhead: one thread is as fast as two and does not collapse on busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache of this session only: tests never read or write ~/.cache."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def four_triples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed set of 4 triples in 2 shards."""
    return write_shard_set(tmp_path_factory.mktemp("four") / "set", range(4))
