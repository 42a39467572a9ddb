"""Tiny real shard sets and a private model cache for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import write_shard_set


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def four_triples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed set of 4 triples in 2 shards."""
    return write_shard_set(tmp_path_factory.mktemp("four") / "set", range(4))
