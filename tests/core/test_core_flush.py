"""ShardWriter.flush ends a shard at a caller's boundary; key_shard tells where a key already is."""

from __future__ import annotations

from pathlib import Path

from factories import make_triple, ok_input

from cafe_core import ShardSet, ShardWriter


def test_flush_ends_the_shard_and_key_shard_finds_keys(tmp_path: Path) -> None:
    shard_set = ShardSet(tmp_path)
    shard_set.prepare("overwrite")
    triples = [make_triple(i) for i in range(5)]
    with ShardWriter(tmp_path, max_samples=100) as writer:
        for triple in triples[:2]:
            writer.add(ok_input(triple), [triple])
        assert writer.key_shard(triples[0].key) == "shard-000000"
        assert writer.key_shard(triples[4].key) is None
        writer.flush()
        writer.flush()  # nothing open: no empty shard
        for triple in triples[2:]:
            writer.add(ok_input(triple), [triple])
    assert [s["nsamples"] for s in writer.written] == [2, 3]
    # A later writer sees the keys of done shards.
    assert ShardWriter(tmp_path).key_shard(triples[3].key) == "shard-000001"
