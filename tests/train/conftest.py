"""Tiny real shard sets and a private model cache for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import make_triple
from train_helpers import corrupt_member, write_shard_set

from cafe_core.flags import add_flag


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def four_triples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed set of 4 triples in 2 shards."""
    return write_shard_set(tmp_path_factory.mktemp("four") / "set", range(4))


@pytest.fixture
def bad_and_flagged(tmp_path: Path) -> tuple[Path, list[str]]:
    """One shard of 3 triples, read in order: the first does not decode, the second is flagged."""
    root = write_shard_set(tmp_path / "bad", range(3), max_samples=3)
    keys = [make_triple(i).key for i in range(3)]
    corrupt_member(root, "shard-000000.tar", keys[0])
    add_flag(root, keys[1], "wrong subject")
    return root, keys
