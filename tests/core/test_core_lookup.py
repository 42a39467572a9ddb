"""Reading chosen samples by key, and rebuilding the index from the tar files."""

from __future__ import annotations

import json

import core_shards as cs
import numpy as np
import pytest

from cafe_core.index import build_index, scan_tar
from cafe_core.layout import detect_layout
from cafe_core.lookup import key_locations, random_keys, read_keys


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lookup") / "set"
    cs.write_set(root, cs.simple_inputs(10), max_samples=3)
    return root


def test_read_keys_in_the_order_asked(root):
    layout = detect_layout(root)
    wanted = [cs.triple(7).key, cs.triple(0).key, cs.triple(4).key]
    got = read_keys(layout, wanted)
    assert [t.key for t in got] == wanted
    for triple, index in zip(got, (7, 0, 4), strict=True):
        assert np.array_equal(np.asarray(triple.mask), np.asarray(cs.triple(index).mask))
    assert key_locations(layout)[cs.triple(7).key] == 2


def test_read_keys_names_unknown_keys(root):
    with pytest.raises(KeyError, match="ffffffffffffffff"):
        read_keys(detect_layout(root), [cs.triple(0).key, "ffffffffffffffff"])


def test_random_keys_are_reproducible(root):
    layout = detect_layout(root)
    assert random_keys(layout, 4, seed=1) == random_keys(layout, 4, seed=1)
    assert len(set(random_keys(layout, 4, seed=1))) == 4
    assert sorted(random_keys(layout, 50)) == sorted(cs.all_keys(root))


def test_index_from_files_equals_index_from_stats(root):
    layout = detect_layout(root)
    assert build_index(layout, from_files=True) == build_index(layout)
    written = json.loads((root / "shardindex.json").read_text())
    assert written == build_index(layout)
    assert scan_tar(root / "shard-000000.tar")["nsamples"] == 3
