"""Listing inputs from a folder, a manifest and WebDataset shards; reading them back by location."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import socket
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
    with pytest.raises(ValueError, match="line 1 has no string `path`"):
        list(manifest_inputs(tmp_path / "m.jsonl"))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"path": "a.jpg"}', "", '{"path": "b.jpg"', '{"path": "c.jpg"}'], "line 3 is not JSON"),
        (['{"path": "a.jpg"}', '{"id": "no-path"}'], "line 2 has no string `path`"),
        (['{"path": "a.jpg"}', '{"path": 7}'], "line 2 has no string `path`"),
        (['{"path": ""}'], "line 1 has no string `path`"),
        (['["a.jpg"]'], "line 1 is not an object"),
        (['{"path": "a.jpg"}', "[" * 100_000], "line 2 is not JSON"),
    ],
)
def test_a_bad_jsonl_line_names_the_file_and_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: {message}")):
        list(list_inputs(manifest))


def test_a_jsonl_line_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b'{"path": "a.jpg"}\n{"path": "\xff.jpg"}\n')
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: line 2 is not UTF-8")):
        list(list_inputs(manifest))


def test_a_bad_parquet_row_or_file_names_the_file_and_the_row(tmp_path: Path) -> None:
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"path": "a.jpg"}, {"path": None}]), manifest)
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: row 2 has no string `path`")):
        list(list_inputs(manifest))
    manifest.write_text("not parquet")
    with pytest.raises(ValueError, match=re.escape(f"{manifest}: not a readable parquet file")):
        list(list_inputs(manifest))


def write_outside_manifest(tmp_path: Path) -> Path:
    """root/lists/m.jsonl naming a photo in root/, one beside root/ (absolute), and /etc/passwd."""
    write_photos(tmp_path / "root" / "photos", ("coffee",))
    write_photos(tmp_path / "elsewhere", ("rocket",))
    rows = [
        {"path": str(tmp_path / "root" / "photos" / "coffee.jpg"), "id": "inside"},
        {"path": str(tmp_path / "elsewhere" / "rocket.jpg"), "id": "outside"},
        {"path": "/etc/passwd", "id": "passwd"},
    ]
    manifest = tmp_path / "root" / "lists" / "m.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def test_manifest_absolute_paths_outside_its_folder_are_refused_by_default(tmp_path: Path) -> None:
    manifest = write_outside_manifest(tmp_path)
    refs = {r.input_key: r for r in list_inputs(manifest)}
    # No roots given: the manifest's own folder (root/lists) is the root; even root/photos is outside it.
    assert {k: r.refused for k, r in refs.items()} == {k: "input.outside_root" for k in ("inside", "outside", "passwd")}
    # Refused at listing, so never read: /etc/passwd read would be decode.not_an_image.
    assert set(decode(list(refs.values())).values()) == {("skipped", "input.outside_root")}


def test_manifest_paths_are_held_to_the_given_roots(tmp_path: Path) -> None:
    manifest = write_outside_manifest(tmp_path)
    root = tmp_path / "root"
    (root / "link.jpg").symlink_to(tmp_path / "elsewhere" / "rocket.jpg")
    with manifest.open("a") as f:
        f.write(json.dumps({"path": "../photos/coffee.jpg", "id": "relative"}) + "\n")  # from the manifest's folder
        f.write(json.dumps({"path": str(root / "link.jpg"), "id": "link"}) + "\n")
    refs = list(list_inputs(manifest, roots=[root]))
    assert {r.input_key: r.refused for r in refs} == {
        "inside": "",
        "relative": "",
        "outside": "input.outside_root",
        "passwd": "input.outside_root",
        "link": "input.outside_root",
    }
    rows = decode(refs)
    assert rows["inside"] == rows["relative"] == ("ok", "")
    for key in ("outside", "passwd", "link"):
        assert rows[key] == ("skipped", "input.outside_root")


def test_allow_outside_root_reads_a_trusted_manifest_anywhere(tmp_path: Path) -> None:
    manifest = write_outside_manifest(tmp_path)
    refs = list(list_inputs(manifest, allow_outside_root=True))
    assert [r.refused for r in refs] == ["", "", ""]
    assert decode(refs) == {
        "inside": ("ok", ""),
        "outside": ("ok", ""),
        "passwd": ("skipped", "decode.not_an_image"),
    }


def write_tar(path: Path, photos: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for number, photo_path in enumerate(photos):
            tar.add(photo_path, arcname=f"{number:09d}.jpg")
    return path


def test_relative_tar_and_brace_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = write_photos(tmp_path / "imgs", ("coffee", "rocket"))
    write_tar(tmp_path / "data" / "c-00000.tar", photos[:1])
    write_tar(tmp_path / "data" / "c-00001.tar", photos[1:])
    monkeypatch.chdir(tmp_path)
    for pattern, keys in (
        ("data/c-00000.tar", ["c-00000.tar/000000000"]),
        ("data/c-{00000..00001}.tar", ["c-00000.tar/000000000", "c-00001.tar/000000000"]),
    ):
        refs = list(list_inputs(pattern))
        assert [r.input_key for r in refs] == keys
        assert all(Path(r.path).is_absolute() and r.uri.startswith("file:///") for r in refs)
        assert {s for s, _ in decode(refs).values()} == {"ok"}


def test_tars_outside_the_given_roots_are_refused(tmp_path: Path) -> None:
    write_tar(tmp_path / "outside" / "a.tar", write_photos(tmp_path / "imgs", ("coffee",)))
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match="outside the input roots"):
        list(list_inputs(str(tmp_path / "outside" / "{a,b}.tar"), roots=[tmp_path / "root"]))
    assert len(list(list_inputs(str(tmp_path / "outside" / "a.tar"), roots=[tmp_path / "outside"]))) == 1


@pytest.mark.timeout(60)  # opening the FIFO blocks forever on code that does not check: fail, never hang
def test_fifos_and_sockets_are_refused_and_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_photos(tmp_path / "in", ("coffee",))
    os.mkfifo(tmp_path / "in" / "x.jpg")
    monkeypatch.chdir(tmp_path / "in")  # a socket's path is limited to ~100 bytes: bind it by a short one
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock.png")
        refs = list(folder_inputs(tmp_path / "in"))
        assert {r.input_key: r.refused for r in refs} == {
            "coffee.jpg": "",
            "sock.png": "input.not_regular_file",
            "x.jpg": "input.not_regular_file",
        }
        columns = {f.name: [getattr(r, f.name) for r in refs] for f in dataclasses.fields(refs[0])}
        batch = DecodeStage(GateConfig())(columns)
    rows = {key: i for i, key in enumerate(batch["input_key"])}
    assert (batch["status"][rows["coffee.jpg"]], batch["reason"][rows["coffee.jpg"]]) == ("ok", "")
    for name, kind in (("x.jpg", "a FIFO"), ("sock.png", "a socket")):
        i = rows[name]
        assert (batch["status"][i], batch["reason"][i]) == ("skipped", "input.not_regular_file")
        assert f"{kind}, not a regular file" in batch["error"][i]


def test_a_link_to_a_folder_outside_the_root_gets_a_status_row(tmp_path: Path) -> None:
    write_photos(tmp_path / "in" / "real", ("coffee",))
    write_photos(tmp_path / "elsewhere", ("rocket",))
    (tmp_path / "in" / "link-out").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "in" / "link-in").symlink_to(tmp_path / "in" / "real")  # listed where it points
    refs = list(folder_inputs(tmp_path / "in"))
    assert {r.input_key: r.refused for r in refs} == {"link-out": "input.outside_root", "real/coffee.jpg": ""}
    assert decode(refs) == {"link-out": ("skipped", "input.outside_root"), "real/coffee.jpg": ("ok", "")}


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
