"""Listing inputs from a folder, a manifest and WebDataset shards; reading them back by location."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from inputs import write_photos

from cafe_pipelines.sources import folder_inputs, list_inputs, manifest_inputs, shard_inputs
from cafe_pipelines.stages.decode import DecodeStage
from cafe_vision.gates import GateConfig


def decode(refs) -> dict:
    columns = {f.name: [getattr(r, f.name) for r in refs] for f in dataclasses.fields(refs[0])}
    batch = DecodeStage(GateConfig())(columns)
    return {k: (s, r) for k, s, r in zip(batch["input_key"], batch["status"], batch["reason"], strict=True)}


def test_folder_is_recursive_sorted_and_skips_non_images(tmp_path: Path) -> None:
    write_photos(tmp_path / "b", ("coffee",))
    write_photos(tmp_path / "a" / "deep", ("rocket",))
    (tmp_path / "notes.txt").write_text("not an input")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    assert [r.input_key for r in folder_inputs(tmp_path)] == ["a/deep/rocket.jpg", "b/coffee.jpg"]


def test_manifest_parquet_and_jsonl(tmp_path: Path) -> None:
    write_photos(tmp_path / "imgs", ("coffee", "rocket"))
    rows = [
        {"path": "imgs/coffee.jpg", "id": "c1", "caption": "a cup of coffee"},
        {"path": str(tmp_path / "imgs" / "rocket.jpg"), "id": None, "caption": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for manifest in (tmp_path / "m.parquet", tmp_path / "m.jsonl"):
        refs = list(list_inputs(manifest))
        assert [r.input_key for r in refs] == ["c1", str(tmp_path / "imgs" / "rocket.jpg")]
        assert refs[0].caption == "a cup of coffee" and refs[1].caption == ""
        assert {s for s, _ in decode(refs).values()} == {"ok"}


def test_manifest_path_escaping_its_folder_is_refused(tmp_path: Path) -> None:
    write_photos(tmp_path / "outside", ("coffee",))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "list.jsonl").write_text(json.dumps({"path": "../outside/coffee.jpg"}) + "\n")
    (ref,) = manifest_inputs(tmp_path / "m" / "list.jsonl")
    assert ref.refused == "input.outside_root"
    assert decode([ref]) == {"../outside/coffee.jpg": ("skipped", "input.outside_root")}


def test_manifest_row_without_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ValueError, match="row 1 has no string `path`"):
        list(manifest_inputs(tmp_path / "m.jsonl"))


def test_img2dataset_shards(tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "imgs", ("coffee", "rocket"))
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for number, path in enumerate(photos):
            for suffix, payload in (
                ("jpg", path.read_bytes()),
                ("txt", f"caption {number}".encode()),
                ("json", b"{}"),
            ):
                info = tarfile.TarInfo(f"{number:09d}.{suffix}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    refs = list(shard_inputs(str(tmp_path / "{00000..00000}.tar")))
    assert [r.input_key for r in refs] == ["00000.tar/000000000", "00000.tar/000000001"]
    assert [r.caption for r in refs] == ["caption 0", "caption 1"]
    assert all(r.size > 0 for r in refs)
    assert {s for s, _ in decode(refs).values()} == {"ok"}


def test_unknown_source_form_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("path\n")
    with pytest.raises(ValueError, match="expected a folder of images, a manifest"):
        list_inputs(tmp_path / "x.csv")
