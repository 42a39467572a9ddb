"""Safe decoding and the decode stage, without Ray: every bad input kind gets its reason."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from inputs import BAD_INPUTS, REFUSED, write_bad_inputs, write_photos

from cafe_pipelines.decoding import DecodeRefused, decode_image, read_input_bytes
from cafe_pipelines.sources import folder_inputs, manifest_inputs
from cafe_pipelines.stages.decode import DecodeStage
from cafe_vision.gates import GateConfig


def decode_folder(folder: Path, **kwargs) -> dict[str, dict]:
    return decode_refs(list(folder_inputs(folder)), **kwargs)


def decode_refs(refs: list, **kwargs) -> dict[str, dict]:
    columns = {f.name: [getattr(r, f.name) for r in refs] for f in dataclasses.fields(refs[0])}
    batch = DecodeStage(GateConfig(), **kwargs)(columns)
    return {key: {name: batch[name][i] for name in batch} for i, key in enumerate(batch["input_key"])}


def test_every_bad_input_kind_gets_its_reason(tmp_path: Path) -> None:
    write_bad_inputs(tmp_path / "in", tmp_path / "elsewhere")
    write_photos(tmp_path / "in", ("coffee",))
    rows = decode_folder(tmp_path / "in")
    assert set(rows) == {*BAD_INPUTS, "coffee.jpg"}
    for name, reason in BAD_INPUTS.items():
        row = rows[name]
        if name in REFUSED:
            assert (row["status"], row["reason"]) == ("skipped", reason), name
            assert row["error"], name  # says what was wrong
            assert row["image"].size == 0, name
        else:
            assert row["status"] == "ok", (name, row["reason"], row["error"])
            assert reason in row["notes"].split(","), name
            assert row["image"].dtype == np.uint8 and row["image"].shape[2] == 3
    assert rows["coffee.jpg"]["status"] == "ok" and rows["coffee.jpg"]["notes"] == ""


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    write_bad_inputs(tmp_path / "in", tmp_path / "elsewhere")
    rows = decode_folder(tmp_path / "in")
    # chelsea thumbnail is landscape; orientation 6 shows it as portrait
    height, width = rows["exif_rotated.jpg"]["image"].shape[:2]
    assert height > width


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    write_bad_inputs(tmp_path / "in", tmp_path / "elsewhere")
    pixels = decode_folder(tmp_path / "in")["sixteen_bit.png"]["image"]
    assert pixels.min() < 10 and pixels.max() > 245 and 100 < pixels.mean() < 155  # a full ramp


def test_large_images_are_downscaled(tmp_path: Path) -> None:
    write_photos(tmp_path / "in", ("astronaut",))
    rows = decode_folder(tmp_path / "in", max_side_px=64)
    assert max(rows["astronaut.jpg"]["image"].shape[:2]) == 64


def test_pixel_limit_is_configurable() -> None:
    with pytest.raises(DecodeRefused) as refused:
        decode_image((Path(__file__).parent / "inputs.py").read_bytes())
    assert refused.value.reason == "decode.not_an_image"
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.new("RGB", (100, 100)).save(buf, "PNG")
    with pytest.raises(DecodeRefused) as refused:
        decode_image(buf.getvalue(), max_pixels=5_000)
    assert refused.value.reason == "decode.too_many_pixels"
    assert decode_image(buf.getvalue(), max_pixels=10_000).pixels.shape == (100, 100, 3)


def test_a_file_vanishing_after_listing_is_recorded(tmp_path: Path) -> None:
    write_photos(tmp_path / "in", ("coffee", "rocket"))
    refs = list(folder_inputs(tmp_path / "in"))
    (tmp_path / "in" / "rocket.jpg").unlink()
    columns = {f.name: [getattr(r, f.name) for r in refs] for f in dataclasses.fields(refs[0])}
    batch = DecodeStage(GateConfig())(columns)
    by_key = dict(zip(batch["input_key"], zip(batch["status"], batch["reason"], strict=True), strict=True))
    assert by_key == {"coffee.jpg": ("ok", ""), "rocket.jpg": ("skipped", "input.missing")}


@pytest.mark.timeout(60)  # open() on a FIFO waits for a writer forever on code that does not check
def test_a_file_replaced_by_a_fifo_after_listing_is_refused_not_opened(tmp_path: Path) -> None:
    write_photos(tmp_path / "in", ("coffee", "rocket"))
    refs = list(folder_inputs(tmp_path / "in"))
    assert [r.refused for r in refs] == ["", ""]
    (tmp_path / "in" / "rocket.jpg").unlink()
    os.mkfifo(tmp_path / "in" / "rocket.jpg")  # swapped between listing and reading
    rows = decode_refs(refs)
    assert (rows["coffee.jpg"]["status"], rows["coffee.jpg"]["reason"]) == ("ok", "")
    assert (rows["rocket.jpg"]["status"], rows["rocket.jpg"]["reason"]) == ("skipped", "input.not_regular_file")
    assert "a FIFO, not a regular file" in rows["rocket.jpg"]["error"]
    with pytest.raises(DecodeRefused) as refused:
        read_input_bytes(str(tmp_path / "in" / "rocket.jpg"))
    assert refused.value.reason == "input.not_regular_file"


def test_a_device_file_is_refused_not_read(tmp_path: Path) -> None:
    # /dev/null reads as empty, /dev/zero never ends: neither is an image file.
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "/dev/null"}) + "\n" + json.dumps({"path": "/dev/zero"}))
    rows = decode_refs(list(manifest_inputs(tmp_path / "m.jsonl", allow_outside_root=True)))
    for name in ("/dev/null", "/dev/zero"):
        assert (rows[name]["status"], rows[name]["reason"]) == ("skipped", "input.not_regular_file"), rows[name]
        assert "a character device" in rows[name]["error"]
