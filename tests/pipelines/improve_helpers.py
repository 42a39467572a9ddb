"""Tiny real inputs for the self-improvement tests: a round-0 set, a 2-step trained run, file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from factories import make_triple, ok_input

from cafe_core import ShardSet, Triple
from cafe_core.index import read_index
from cafe_core.layout import detect_layout
from cafe_core.status import read_status_tables


def varied_triple(index: int) -> Triple:
    """`make_triple(index)`; odd indices name a live subject (a dog), so the set has two classes."""
    triple = make_triple(index)
    if index % 2 == 0:
        return triple
    metadata = {**triple.metadata, "subject": "brown dog", "caption": "a brown dog on a noisy table"}
    return Triple(triple.key, triple.target, triple.reference, triple.mask, "a photo of brown dog", metadata)


def write_input_set(root: Path, count: int, *, per_shard: int = 3) -> Path:
    """A closed round-0 set of `count` varied triples."""
    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=per_shard) as writer:
        for index in range(count):
            triple = varied_triple(index)
            writer.add(ok_input(triple), [triple])
    return root


def train_tiny(shards: Path, run_dir: Path, model_cache: Path | None = None) -> Path:
    """A `tiny` run of 2 steps at 64 px with one checkpoint (tests may import cafe_train; pipelines may not).

    model_cache: where the tiny models are built (None: the cafe model cache; bench/improve.py's).
    """
    from cafe_train import TrainConfig, train

    config = TrainConfig(
        shards=[shards],
        output_dir=run_dir,
        preset="tiny",
        max_steps=2,
        resolution_px=64,
        batch_size=2,
        num_workers=0,
        checkpoint_every=2,
        model_cache_dir=model_cache,
    )
    train(config)
    return run_dir


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below `root`, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def status_rows(root: Path) -> dict[str, dict]:
    layout = detect_layout(root)
    table = read_status_tables([layout.status_path(n) for n in layout.done_numbers()])
    return {row["input_key"]: row for row in table.to_pylist()}


def shard_md5s(root: Path) -> dict[str, str]:
    return {e["url"]: e["md5"] for e in read_index(detect_layout(root))["shardlist"]}
