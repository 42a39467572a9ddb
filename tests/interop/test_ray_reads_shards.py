"""`ray.data.read_webdataset` reads a cafe shard set as it is (DESIGN.md: any plain reader must)."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import make_triple, ok_input

from cafe_core import ShardSet


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_reads_our_shards(local_ray, tmp_path: Path) -> None:
    ray = local_ray
    root = tmp_path / "set"
    triples = [make_triple(i) for i in range(7)]
    with ShardSet(root).writer(max_samples=3) as writer:
        for triple in triples:
            writer.add(ok_input(triple), [triple])
    rows = ray.data.read_webdataset(str(root), decoder=None, file_extensions=["tar"]).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(t.key for t in triples)
    by_key = {r["__key__"]: r for r in rows}
    for triple in triples:
        row = by_key[triple.key]
        assert row["prompt.txt"] in (triple.prompt, triple.prompt.encode())
        assert {"target.jpg", "reference.png", "mask.png", "json"} <= set(row)
