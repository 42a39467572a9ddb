"""shard_set_stats: counts and distributions from stats.json files only, never the tars."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import core_shards as cs
import numpy as np
import pytest
from core_shards import failed, skipped

from cafe_core import InputStatus, ShardSet, make_key
from cafe_core.stats import distribution, shard_set_stats

BOX_SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def scored(index: int, box: float, round_: int = 0, quality: dict | None = None, subject: str = "red cube"):
    triple = cs.factories.make_triple(index, round_=round_, scores={"box": box, "mask_iou": 0.5 + box / 10})
    metadata = dict(triple.metadata, subject=subject)
    if quality is not None:
        metadata["quality"] = quality
    return dataclasses.replace(triple, metadata=metadata)


def stats_inputs() -> list[cs.Input]:
    """10 samples (6 of round 0, 4 of round 1), 3 skipped and 1 failed input."""
    result: list[cs.Input] = []
    for i, box in enumerate(BOX_SCORES):
        round_ = 0 if i < 6 else 1
        quality = {"clip_t": 0.2 + i / 100} if round_ else None
        subject = "red cube" if i % 2 else "blue mug"
        result.append((InputStatus.ok(cs.input_key(i)), [scored(i, box, round_, quality, subject)]))
    result.insert(3, skipped(20, "decode.truncated"))
    result.insert(5, skipped(21, "decode.truncated"))
    result.insert(8, skipped(22, "gate.mask_area"))
    result.append(failed(23, "model.error"))
    return result


@pytest.fixture(scope="module")
def stats_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats") / "set"
    cs.write_set(root, stats_inputs(), max_samples=3)
    return root


def test_counts(stats_set):
    stats = shard_set_stats(stats_set)
    assert stats["prefix"] == "shard"
    assert stats["num_shards"] == 4
    assert stats["num_samples"] == 10
    assert stats["num_inputs"] == 14
    assert stats["num_bytes"] == sum(p.stat().st_size for p in cs.tars(stats_set))
    assert stats["status"] == {"ok": 10, "skipped": 3, "failed": 1}
    assert stats["index"] == "ok"


def test_rounds_and_reasons(stats_set):
    stats = shard_set_stats(stats_set)
    assert stats["rounds"] == {"0": 6, "1": 4}
    assert stats["reasons"] == {
        "failed": {"model.error": 1},
        "skipped": {"decode.truncated": 2, "gate.mask_area": 1},
    }
    assert stats["subjects"] == {"blue mug": 5, "red cube": 5}


def test_score_distributions(stats_set):
    stats = shard_set_stats(stats_set)
    box = stats["scores"]["box"]
    assert box["count"] == 10
    assert box["mean"] == pytest.approx(0.55)
    assert box["min"] == pytest.approx(0.1)
    assert box["max"] == pytest.approx(1.0)
    assert box["p50"] == pytest.approx(0.55)
    assert box["p05"] == pytest.approx(np.quantile(BOX_SCORES, 0.05))
    assert box["p95"] == pytest.approx(np.quantile(BOX_SCORES, 0.95))
    assert sum(box["histogram"]["counts"]) == 10
    assert box["histogram"]["edges"][0] == pytest.approx(0.1)
    assert box["histogram"]["edges"][-1] == pytest.approx(1.0)
    assert len(box["histogram"]["edges"]) == 11
    assert stats["scores"]["mask_iou"]["mean"] == pytest.approx(0.555)
    # Quality scores exist only on the 4 generated samples.
    clip_t = stats["quality"]["clip_t"]
    assert clip_t["count"] == 4
    assert clip_t["min"] == pytest.approx(0.26)
    assert clip_t["max"] == pytest.approx(0.29)
    assert clip_t["mean"] == pytest.approx(0.275)


def test_stats_never_open_a_tar(stats_set, tmp_path):
    before = shard_set_stats(stats_set)
    copy = tmp_path / "set"
    shutil.copytree(stats_set, copy)
    for path in cs.tars(copy):
        size = path.stat().st_size
        path.write_bytes(os.urandom(size // 2))  # garbage, and not even the same size
    assert shard_set_stats(copy) == before


def test_stats_of_an_open_set(stats_set, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(stats_set, copy)
    (copy / "shardindex.json").unlink()
    stats = shard_set_stats(copy)
    assert stats["index"].startswith("missing")
    assert stats["num_samples"] == 10


def test_stats_notice_a_stale_index(stats_set, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(stats_set, copy)
    (copy / "shard-000003.stats.json").unlink()  # the shard no longer counts as done
    stats = shard_set_stats(copy)
    assert stats["num_shards"] == 3
    assert stats["index"].startswith("stale")


def test_stats_agree_with_dataset_json(stats_set):
    stats = shard_set_stats(stats_set)
    dataset = json.loads((stats_set / "dataset.json").read_text())
    for field in ("num_shards", "num_samples", "num_inputs", "num_bytes", "status", "reasons", "rounds"):
        assert dataset[field] == stats[field], field


def test_stats_with_a_score_missing_on_some_samples(tmp_path):
    first = cs.factories.make_triple(0, scores={"box": 0.4})
    second = cs.factories.make_triple(1, scores={"box": 0.8, "dino": 0.3})
    with ShardSet(tmp_path).writer(fsync=False) as writer:
        for triple in (first, second):
            writer.add(cs.factories.ok_input(triple), [triple])
    stats = shard_set_stats(tmp_path)
    assert stats["scores"]["box"]["count"] == 2
    assert stats["scores"]["box"]["mean"] == pytest.approx(0.6)
    assert stats["scores"]["dino"] == {**stats["scores"]["dino"], "count": 1, "min": 0.3, "max": 0.3}


def test_stats_of_a_set_with_only_skipped_inputs(tmp_path):
    cs.write_set(tmp_path, [skipped(i, "decode.not_an_image") for i in range(3)])
    stats = shard_set_stats(tmp_path)
    assert stats["num_samples"] == 0
    assert stats["scores"] == {}
    assert stats["rounds"] == {}
    assert stats["reasons"] == {"skipped": {"decode.not_an_image": 3}}


def test_distribution_helper():
    assert distribution([]) == {"count": 0}
    assert distribution([None, None]) == {"count": 0}
    single = distribution([2.0, None])
    assert single["count"] == 1
    assert single["mean"] == single["min"] == single["max"] == single["p50"] == 2.0


def test_keys_in_stats_match_the_tar(stats_set):
    for path in cs.tars(stats_set):
        stats = cs.stats_json(stats_set, path.name.removesuffix(".tar"))
        assert stats["samples"]["key"] == [key for key, _ in cs.samples_of(path)]
        assert len(stats["samples"]["round"]) == stats["nsamples"]
    assert make_key(cs.input_key(0)) in {k for ks in cs.shard_keys(stats_set).values() for k in ks}
