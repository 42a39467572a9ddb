"""Helpers for the training tests: tiny real shard sets."""

from __future__ import annotations

from pathlib import Path

from factories import make_triple, ok_input

from cafe_core import ShardSet


def write_shard_set(root: Path, indices: range, *, max_samples: int = 2) -> Path:
    """A closed set of `make_triple(i)` for i in `indices`, `max_samples` per shard."""
    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=max_samples) as writer:
        for index in indices:
            triple = make_triple(index)
            writer.add(ok_input(triple), [triple])
    return root
