"""ShardWriter through ShardSet.writer: what lands on disk, rollover, determinism."""

from __future__ import annotations

import json

import core_shards as cs
import numpy as np
import pytest
from core_shards import failed, ok, skipped

from cafe_core import EncodedSample, InputStatus, ShardSet, ShardWriter, TripleReader
from cafe_core.validate import validate_set


def mixed_inputs() -> list[cs.Input]:
    """8 inputs: ok with 1 or 2 triples, skipped and failed, in a fixed order."""
    return [
        ok(0),
        skipped(1, "decode.truncated"),
        ok(2, num_triples=2),
        failed(3, "model.error"),
        ok(4),
        skipped(5, "gate.mask_area"),
        ok(6),
        skipped(7, "decode.truncated"),
    ]


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "set"
    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=2, lineage={"job": "unit"}) as writer:
        added = [writer.add(status, triples) for status, triples in mixed_inputs()]
    return root, added, writer.written


def test_round_trip_keys_prompts_metadata_pixels(mixed_set):
    root, added, _ = mixed_set
    assert added == [True] * 8
    expected = {t.key: t for _, triples in mixed_inputs() for t in triples}
    reader = TripleReader(root, on_error="raise")
    got = list(reader)
    assert [t.key for t in got] == list(expected)  # written order is read order
    for triple in got:
        want = expected[triple.key]
        assert triple.prompt == want.prompt
        assert triple.metadata == want.metadata
        assert np.array_equal(np.asarray(triple.reference), np.asarray(want.reference))
        assert np.array_equal(np.asarray(triple.mask), np.asarray(want.mask))
        assert triple.target.size == want.target.size
    assert reader.report.samples_read == 5
    assert reader.report.samples_skipped == 0
    assert reader.report.shards_read == 3


def test_status_table_has_one_row_per_input(mixed_set):
    root, _, _ = mixed_set
    rows = cs.status_rows(root)
    assert [r["input_key"] for r in rows] == [s.input_key for s, _ in mixed_inputs()]
    by_input = {r["input_key"]: r for r in rows}
    for status, triples in mixed_inputs():
        row = by_input[status.input_key]
        assert row["status"] == status.status
        assert row["reason"] == status.reason
        assert row["error"] == status.error
        assert row["sample_keys"] == [t.key for t in triples]
    assert by_input[cs.input_key(1)]["reason"] == "decode.truncated"
    assert by_input[cs.input_key(3)]["status"] == "failed"
    # Each input's row sits in the shard holding its samples.
    keys_by_shard = cs.shard_keys(root)
    for row in rows:
        assert all(key in keys_by_shard[row["shard"] + ".tar"] for key in row["sample_keys"])


def test_status_table_keeps_source_uri_and_timings(tmp_path):
    status = InputStatus.ok(
        cs.input_key(0), source_uri="s3://bucket/img-0.jpg", timings_s={"decode": 0.5, "gate": 1.25}
    )
    cs.write_set(tmp_path, [(status, [cs.triple(0)])])
    (row,) = cs.status_rows(tmp_path)
    assert row["source_uri"] == "s3://bucket/img-0.jpg"
    assert dict(row["timings_s"]) == {"decode": 0.5, "gate": 1.25}


def test_stats_json_per_shard(mixed_set):
    root, _, written = mixed_set
    names = [p.name.removesuffix(".tar") for p in cs.tars(root)]
    assert names == ["shard-000000", "shard-000001", "shard-000002"]
    assert [s["shard"] for s in written] == names
    total_inputs = 0
    for name in names:
        stats = cs.stats_json(root, name)
        tar = root / f"{name}.tar"
        assert stats["url"] == tar.name
        assert stats["md5"] == cs.md5(tar)
        assert stats["filesize"] == tar.stat().st_size
        assert stats["nsamples"] == len(cs.shard_keys(root)[tar.name])
        assert stats["samples"]["key"] == cs.shard_keys(root)[tar.name]
        assert sum(stats["status"].values()) == stats["num_inputs"]
        total_inputs += stats["num_inputs"]
    assert total_inputs == 8
    first = cs.stats_json(root, "shard-000000")
    # ok(0), skipped(1); ok(2) has 2 triples and does not fit beside ok(0) under max_samples=2.
    assert first["status"] == {"ok": 1, "skipped": 1, "failed": 0}
    assert first["reasons"] == {"skipped": {"decode.truncated": 1}}


def test_shardindex_is_wids_layout(mixed_set):
    from wids.wids_specs import check_shards, load_dsdesc_and_resolve

    root, _, _ = mixed_set
    index = json.loads((root / "shardindex.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    assert index["wids_version"] == 1
    assert [e["url"] for e in index["shardlist"]] == [p.name for p in cs.tars(root)]
    for entry in index["shardlist"]:
        tar = root / entry["url"]  # relative to the index's folder
        assert entry["filesize"] == tar.stat().st_size
        assert entry["md5"] == cs.md5(tar)
        assert entry["nsamples"] == len(cs.shard_keys(root)[tar.name])
    resolved = load_dsdesc_and_resolve(str(root / "shardindex.json"), base=str(root) + "/")
    check_shards(resolved["shardlist"])
    assert sum(e["nsamples"] for e in resolved["shardlist"]) == 5


def test_dataset_json_totals(mixed_set):
    root, _, _ = mixed_set
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["prefix"] == "shard"
    assert dataset["num_shards"] == 3
    assert dataset["num_samples"] == 5
    assert dataset["num_inputs"] == 8
    assert dataset["status"] == {"ok": 4, "skipped": 3, "failed": 1}
    assert dataset["reasons"] == {
        "failed": {"model.error": 1},
        "skipped": {"decode.truncated": 2, "gate.mask_area": 1},
    }
    assert dataset["rounds"] == {"0": 5}
    assert dataset["num_bytes"] == sum(p.stat().st_size for p in cs.tars(root))
    assert dataset["lineage"] == {"job": "unit"}
    assert dataset["closed_at"]
    assert dataset["schema_version"] == 1


def test_closed_set_validates_and_leaves_no_temporaries(mixed_set):
    root, _, _ = mixed_set
    report = validate_set(root)
    assert report.ok, report.problems
    assert report.num_shards == 3
    assert report.num_samples == 5
    assert cs.hidden_temporaries(root) == []


def test_custom_prefix(tmp_path):
    with ShardSet(tmp_path, prefix="round-1").writer(fsync=False, max_samples=1) as writer:
        for status, triples in cs.simple_inputs(2):
            writer.add(status, triples)
    assert [p.name for p in cs.tars(tmp_path)] == ["round-1-000000.tar", "round-1-000001.tar"]
    assert validate_set(tmp_path).ok
    assert len(list(TripleReader(tmp_path))) == 2
    with pytest.raises(ValueError, match="prefix"):
        ShardSet(tmp_path, prefix="bad.prefix")


# -- rollover -----------------------------------------------------------------------------------


def shards_of_inputs(root) -> list[list[str]]:
    """Input keys per shard (status rows), in shard order."""
    grouped: dict[str, list[str]] = {}
    for row in cs.status_rows(root):
        grouped.setdefault(row["shard"], []).append(row["input_key"])
    return [grouped[name] for name in sorted(grouped)]


def assert_no_input_straddles(root):
    keys_by_shard = cs.shard_keys(root)
    for row in cs.status_rows(root):
        assert set(row["sample_keys"]) <= set(keys_by_shard[row["shard"] + ".tar"]), row


def test_rollover_by_sample_count_keeps_inputs_whole(tmp_path):
    counts = [1, 2, 1, 2, 2, 1, 1, 1, 2]
    inputs = [ok(i, num_triples=n) for i, n in enumerate(counts)]
    cs.write_set(tmp_path, inputs, max_samples=3)
    per_shard = [len(keys) for keys in cs.shard_keys(tmp_path).values()]
    # Greedy: [1,2] [1,2] [2,1] [1,1] [2] -- never 4 and never a split input.
    assert per_shard == [3, 3, 3, 2, 2]
    assert shards_of_inputs(tmp_path) == [
        [cs.input_key(0), cs.input_key(1)],
        [cs.input_key(2), cs.input_key(3)],
        [cs.input_key(4), cs.input_key(5)],
        [cs.input_key(6), cs.input_key(7)],
        [cs.input_key(8)],
    ]
    assert_no_input_straddles(tmp_path)
    assert len(cs.all_keys(tmp_path)) == sum(counts)


def test_input_with_more_samples_than_max_gets_own_shard(tmp_path):
    inputs = [ok(0), ok(1, num_triples=3), ok(2)]
    cs.write_set(tmp_path, inputs, max_samples=2)
    assert [len(k) for k in cs.shard_keys(tmp_path).values()] == [1, 3, 1]
    assert_no_input_straddles(tmp_path)


def test_rollover_by_bytes(tmp_path):
    counts = [1, 2, 1, 1, 2, 1, 1, 1]
    inputs = [ok(i, num_triples=n) for i, n in enumerate(counts)]
    sizes = [sum(EncodedSample.from_triple(t).num_bytes for t in triples) for _, triples in inputs]
    max_bytes = int(max(sizes) * 1.6)
    # The documented rule: roll over before an input that would push the shard past max_bytes.
    expected: list[list[int]] = []
    payload = 0
    for i, size in enumerate(sizes):
        if expected and payload + size > max_bytes:
            expected.append([])
            payload = 0
        if not expected:
            expected.append([])
        expected[-1].append(i)
        payload += size
    assert len(expected) >= 4  # the bound really bites
    cs.write_set(tmp_path, inputs, max_bytes=max_bytes)
    assert shards_of_inputs(tmp_path) == [[cs.input_key(i) for i in group] for group in expected]
    for name in cs.shard_keys(tmp_path):
        stats = cs.stats_json(tmp_path, name.removesuffix(".tar"))
        assert stats["nsamples"] >= 1
    assert_no_input_straddles(tmp_path)


def test_input_larger_than_max_bytes_gets_own_shard(tmp_path):
    big = cs.factories.make_triple(1, size=(256, 192))
    small = [cs.triple(0), cs.triple(2), cs.triple(3)]
    small_bytes = EncodedSample.from_triple(small[0]).num_bytes
    big_bytes = EncodedSample.from_triple(big).num_bytes
    max_bytes = int(small_bytes * 2.5)
    assert big_bytes > max_bytes
    inputs = [
        ok(0),
        (InputStatus.ok(big.metadata["source"]["input_key"]), [big]),
        ok(2),
        ok(3),
    ]
    cs.write_set(tmp_path, inputs, max_bytes=max_bytes)
    assert list(cs.shard_keys(tmp_path).values()) == [[small[0].key], [big.key], [small[1].key, small[2].key]]
    assert validate_set(tmp_path).ok


def test_max_inputs_rolls_over_for_inputs_without_samples(tmp_path):
    inputs = [skipped(i) for i in range(10)]
    cs.write_set(tmp_path, inputs, max_inputs=4)
    assert [len(g) for g in shards_of_inputs(tmp_path)] == [4, 4, 2]
    assert [len(k) for k in cs.shard_keys(tmp_path).values()] == [0, 0, 0]
    report = validate_set(tmp_path)
    assert report.ok, report.problems
    assert report.num_samples == 0
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["num_inputs"] == 10
    assert dataset["status"]["skipped"] == 10


def test_max_inputs_defaults_to_ten_times_max_samples(tmp_path):
    cs.write_set(tmp_path, [skipped(i) for i in range(25)], max_samples=1)
    assert [len(g) for g in shards_of_inputs(tmp_path)] == [10, 10, 5]


def test_empty_run_gives_a_closed_empty_set(tmp_path):
    cs.write_set(tmp_path, [])
    assert cs.tars(tmp_path) == []
    index = json.loads((tmp_path / "shardindex.json").read_text())
    assert index["shardlist"] == []
    assert json.loads((tmp_path / "dataset.json").read_text())["num_samples"] == 0


# -- determinism --------------------------------------------------------------------------------


def test_same_inputs_give_byte_identical_tars(tmp_path):
    inputs = [*mixed_inputs(), *cs.simple_inputs(6, start=10)]
    cs.write_set(tmp_path / "a", inputs, max_samples=3)
    cs.write_set(tmp_path / "b", inputs, max_samples=3)
    a, b = cs.tar_md5s(tmp_path / "a"), cs.tar_md5s(tmp_path / "b")
    assert len(a) == 4
    assert a == b
    assert cs.status_rows(tmp_path / "a") == cs.status_rows(tmp_path / "b")
    index_a = json.loads((tmp_path / "a" / "shardindex.json").read_text())["shardlist"]
    index_b = json.loads((tmp_path / "b" / "shardindex.json").read_text())["shardlist"]
    assert index_a == index_b


# -- refusals -----------------------------------------------------------------------------------


def test_bad_inputs_are_refused_with_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="reason"):
        InputStatus("x", "skipped")
    with pytest.raises(ValueError, match="dotted lowercase"):
        InputStatus("x", "skipped", reason="Decode Truncated")
    with pytest.raises(ValueError, match="not one of"):
        InputStatus("x", "dropped", reason="a.b")
    with pytest.raises(ValueError, match="input_key"):
        InputStatus("", "ok")
    with pytest.raises(ValueError, match="max_samples"):
        ShardWriter(tmp_path, max_samples=0)
    with pytest.raises(ValueError, match="shard_stride"):
        ShardWriter(tmp_path, shard_stride=0)
    with pytest.raises(ValueError, match="mode: 'append' is not one of overwrite, incremental, extend"):
        ShardSet(tmp_path).prepare("append")
    with ShardWriter(tmp_path, fsync=False) as writer:
        with pytest.raises(ValueError, match="status ok needs at least one sample"):
            writer.add(InputStatus.ok("x"), [])
        with pytest.raises(ValueError, match="cannot carry samples"):
            writer.add(InputStatus("x", "skipped", reason="decode.truncated"), [cs.triple(0)])
        with pytest.raises(ValueError, match=f"duplicate key '{cs.triple(0).key}'"):
            writer.add(InputStatus.ok("x"), [cs.triple(0), cs.triple(0)])
        writer.add(*ok(0))
        with pytest.raises(ValueError, match=f"duplicate key '{cs.triple(0).key}'.*shard-000000"):
            writer.add(InputStatus.ok("again"), [cs.triple(0)])


def test_add_encoded_copies_samples_without_decoding(tmp_path):
    cs.write_set(tmp_path / "src", cs.simple_inputs(3))
    with ShardSet(tmp_path / "dst").writer(fsync=False) as writer:
        for key, members in cs.samples_of(tmp_path / "src" / "shard-000000.tar"):
            writer.add_encoded(InputStatus.ok(f"copy/{key}"), [EncodedSample.from_members(key, members)])
    assert cs.tar_md5s(tmp_path / "dst") == cs.tar_md5s(tmp_path / "src")
    with pytest.raises(ValueError, match="missing member"):
        EncodedSample.from_members(cs.triple(0).key, {"json": b"{}"})
    with pytest.raises(ValueError, match="16 lowercase hex"):
        EncodedSample.from_members("NOPE", cs.triple(0).encode())


def test_error_inside_writer_drops_the_open_shard_and_leaves_set_open(tmp_path):
    root = tmp_path / "set"
    with pytest.raises(RuntimeError, match="boom"), ShardSet(root).writer(fsync=False, max_samples=2) as writer:
        for status, triples in cs.simple_inputs(3):
            writer.add(status, triples)
        raise RuntimeError("boom")
    # Shard 0 (2 samples) committed; shard 1 (1 sample, open at the error) dropped, no temporaries.
    assert [p.name for p in cs.tars(root)] == ["shard-000000.tar"]
    assert cs.hidden_temporaries(root) == []
    assert not (root / "shardindex.json").exists()
    assert not (root / "dataset.json").exists()
    # Incremental finishes it to the same bytes as a clean run.
    cs.write_set(root, cs.simple_inputs(3), mode="incremental", max_samples=2)
    cs.write_set(tmp_path / "clean", cs.simple_inputs(3), max_samples=2)
    assert cs.tar_md5s(root) == cs.tar_md5s(tmp_path / "clean")
    assert validate_set(root).ok
