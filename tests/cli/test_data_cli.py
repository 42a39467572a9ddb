"""`cafe data build`: the errors a user can cause stop it with exit code 2 and a message, before Ray or a model,
and nothing is written."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from cafe_cli.main import app

runner = CliRunner()


def cafe(*args) -> object:
    return runner.invoke(app, ["data", "build", *(str(a) for a in args)])


def photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (96, 96), "red").save(folder / "red.jpg")
    return folder


def listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def test_an_output_in_or_around_the_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    photo_dir = photos(tmp_path / "in")
    (photo_dir / "list.jsonl").write_text(json.dumps({"path": "red.jpg"}) + "\n")
    with tarfile.open(tmp_path / "c-00000.tar", "w") as tar:
        tar.add(photo_dir / "red.jpg", arcname="000000000.jpg")
    before = listing(photo_dir)
    cases = [
        (photo_dir, photo_dir, "it is the input folder"),
        (photo_dir, photo_dir / "out", "it lies inside the input folder"),
        (photo_dir / "list.jsonl", photo_dir / "out", "lies inside the manifest's folder"),
        (photo_dir / "list.jsonl", photo_dir, "it holds the manifest"),
        (tmp_path / "c-{00000..00000}.tar", tmp_path, "it holds the input shard"),
    ]
    for source, output, message in cases:
        result = cafe("--input", source, "--output", output)
        assert result.exit_code == 2, (source, output, result.output)
        assert message in result.output, (source, output, result.output)
    assert listing(photo_dir) == before


def test_a_bad_setting_exits_2_naming_the_key(tmp_path: Path) -> None:
    photo_dir = photos(tmp_path / "in")
    for setting, message in (
        ("max_pixels=0", "max_pixels: 0 must be >= 1024"),
        ("max_side_px=0", "max_side_px: 0 must be >= 32"),
        ("gates.min_box_score=abc", "gates.min_box_score: 'abc' is not a number or null"),
    ):
        result = cafe("--input", photo_dir, "--output", tmp_path / "out", "--set", setting)
        assert result.exit_code == 2, (setting, result.output)
        assert message in result.output, (setting, result.output)
        assert "TypeError" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_an_empty_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    result = cafe("--input", tmp_path / "empty", "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "no inputs found" in result.output and ".jpg" in result.output
    assert not (tmp_path / "out").exists()


def test_a_bad_manifest_line_exits_2_naming_the_file_and_line(tmp_path: Path) -> None:
    photos(tmp_path / "lists")
    manifest = tmp_path / "lists" / "m.jsonl"
    manifest.write_text(json.dumps({"path": "red.jpg"}) + "\n\n" + '{"path": "red.jpg",\n')
    result = cafe("--input", manifest, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert f"{manifest}: line 3 is not JSON" in result.output
    assert not (tmp_path / "out").exists()


def test_input_roots_and_allow_outside_root_are_checked(tmp_path: Path) -> None:
    photo_dir = photos(tmp_path / "in")
    both = cafe("--input", photo_dir, "--output", tmp_path / "out", "--input-root", tmp_path, "--allow-outside-root")
    assert both.exit_code == 2 and "not both" in both.output, both.output
    missing = cafe("--input", photo_dir, "--output", tmp_path / "out", "--input-root", tmp_path / "nope")
    assert missing.exit_code == 2 and "not an existing folder" in missing.output, missing.output
    assert not (tmp_path / "out").exists()
