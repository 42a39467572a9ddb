"""Other readers read a cafe set unaided: webdataset, wids, GNU tar, Python's tarfile."""

from __future__ import annotations

import functools
import io
import json
import shutil
import subprocess
import tarfile

import core_shards as cs
import numpy as np
import pytest
import webdataset as wds
import wids
from core_shards import ok, skipped
from PIL import Image
from wids.wids_decode import default_decoder

MEMBERS = ("target.jpg", "reference.png", "mask.png", "prompt.txt", "json")


def inputs() -> list[cs.Input]:
    return [ok(0), ok(1, num_triples=2), skipped(2), ok(3), ok(4), ok(5, num_triples=2), ok(6)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop") / "set"
    cs.write_set(root, inputs(), max_samples=3)
    triples = {t.key: t for _, ts in inputs() for t in ts}
    return root, triples


def test_set_has_several_shards(written):
    root, triples = written
    assert len(cs.tars(root)) == 3
    assert len(triples) == 8


def test_plain_webdataset_reads_every_sample(written):
    root, triples = written
    urls = [str(p) for p in cs.tars(root)]
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == list(triples)
    for sample in samples:
        assert set(MEMBERS) <= set(sample)
        triple = triples[sample["__key__"]]
        # webdataset's "pil" decodes every image to RGB; the pixels are still the written ones.
        assert sample["target.jpg"].size == triple.target.size
        assert np.array_equal(np.asarray(sample["mask.png"]), np.asarray(triple.mask.convert("RGB")))
        assert np.array_equal(np.asarray(sample["reference.png"]), np.asarray(triple.reference.convert("RGB")))
        assert sample["prompt.txt"] == triple.prompt
        assert sample["json"] == triple.metadata


def test_webdataset_keeps_contract_modes_with_pilrgba_and_l(written):
    root, triples = written
    urls = [str(p) for p in cs.tars(root)]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pilrgba"))
    for sample in samples:
        triple = triples[sample["__key__"]]
        assert np.array_equal(np.asarray(sample["reference.png"]), np.asarray(triple.reference))
    masks = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("l"))
    for sample in masks:
        assert np.asarray(sample["mask.png"]).shape == triples[sample["__key__"]].mask.size[::-1]


def test_webdataset_brace_url_and_undecoded_bytes(written):
    root, triples = written
    url = str(root / "shard-{000000..000002}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == list(triples)
    for sample in samples:
        assert {k: sample[k] for k in MEMBERS} == triples[sample["__key__"]].encode()


def test_wids_reads_the_shard_index(written, tmp_path, monkeypatch):
    root, triples = written
    monkeypatch.setenv("WIDS_CACHE", str(tmp_path / "wids-cache"))  # keep wids' local copies out of /tmp
    dataset = wids.ShardListDataset(
        str(root / "shardindex.json"), transformations=[functools.partial(default_decoder, format="PIL")]
    )
    assert len(dataset) == len(triples)
    keys = []
    for i in range(len(dataset)):
        sample = dataset[i]
        keys.append(sample["__key__"])
        # wids names members by everything after the key's dot, dot included.
        assert {f".{m}" for m in MEMBERS} <= set(sample)
        triple = triples[sample["__key__"]]
        assert sample[".json"] == triple.metadata
        assert sample[".prompt.txt"] == triple.prompt
        assert np.array_equal(np.asarray(sample[".mask.png"]), np.asarray(triple.mask))
        assert sample[".target.jpg"].size == triple.target.size
    assert keys == list(triples)
    # Random access, and the shard each sample came from.
    last = dataset[len(dataset) - 1]
    assert last["__key__"] == list(triples)[-1]
    assert last["__shard__"].endswith("shard-000002.tar")
    dataset.close()


def test_wids_reads_raw_bytes_without_transformations(written, tmp_path):
    root, triples = written
    dataset = wids.ShardListDataset(str(root / "shardindex.json"), cache_dir=str(tmp_path / "c"), transformations=[])
    first = dataset[0]
    triple = triples[first["__key__"]]
    raw = {m: first[f".{m}"] for m in MEMBERS}
    raw = {m: v.read() if hasattr(v, "read") else v for m, v in raw.items()}
    assert raw == triple.encode()
    dataset.close()


def test_wids_reads_a_moved_set(written, tmp_path):
    # Urls in the index are relative: the set is a folder that can be copied anywhere.
    root, triples = written
    moved = tmp_path / "elsewhere" / "set"
    shutil.copytree(root, moved)
    dataset = wids.ShardListDataset(str(moved / "shardindex.json"), cache_dir=str(tmp_path / "c"), transformations=[])
    assert len(dataset) == len(triples)
    assert dataset[len(dataset) - 1]["__key__"] == list(triples)[-1]
    dataset.close()


def test_gnu_tar_lists_every_member(written):
    root, triples = written
    listed = []
    for path in cs.tars(root):
        done = subprocess.run(["tar", "tf", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        listed += done.stdout.splitlines()
    assert listed == [f"{key}.{m}" for key in triples for m in MEMBERS]


def test_gnu_tar_extracts_identical_bytes(written, tmp_path):
    root, triples = written
    subprocess.run(["tar", "xf", str(root / "shard-000000.tar"), "-C", str(tmp_path)], check=True)
    key = next(iter(triples))
    for member, data in triples[key].encode().items():
        assert (tmp_path / f"{key}.{member}").read_bytes() == data


def test_python_tarfile_reads_every_member(written):
    root, triples = written
    for path in cs.tars(root):
        with tarfile.open(path) as tar:
            for info in tar.getmembers():
                assert info.isfile()
                assert info.mtime == 0  # fixed, for byte-identical reruns
                key, member = info.name.split(".", 1)
                assert tar.extractfile(info).read() == triples[key].encode()[member]


def test_status_and_stats_are_plain_formats(written):
    import pyarrow.parquet as pq

    root, _ = written
    table = pq.read_table(root / "shard-000000.status.parquet")
    assert table.column_names[:6] == ["input_key", "source_uri", "status", "reason", "error", "sample_keys"]
    stats = json.loads((root / "shard-000000.stats.json").read_text())
    assert stats["nsamples"] == 3
    image = Image.open(io.BytesIO(cs.read_members(root / "shard-000000.tar")[1][1]))
    assert image.format == "PNG"
