"""`cafe demo` runs the whole loop on the bundled photos: a valid set, a contact sheet, a checkpoint, an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core.stats import shard_set_stats
from cafe_core.validate import validate_set


@pytest.mark.ray
@pytest.mark.slow
def test_demo_builds_a_valid_set_trains_and_generates(local_ray, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "random" in result.output and "--preset base" in result.output  # says plainly what tiny is
    shards = tmp_path / "demo" / "shards"
    assert validate_set(shards).ok
    stats = shard_set_stats(shards)
    assert stats["num_inputs"] == 9  # 7 photos and 2 broken files, each with its status row
    assert stats["reasons"]["skipped"] == {"decode.not_an_image": 1, "decode.truncated": 1}
    assert stats["num_samples"] >= 1
    assert (tmp_path / "demo" / "grid.png").stat().st_size > 10_000
    run = tmp_path / "demo" / "run"
    assert (run / "checkpoints" / "step-000020" / "trainable.safetensors").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 20
    with Image.open(tmp_path / "demo" / "generated.png") as image:
        assert image.size == (64, 64)
        assert json.loads(image.text["cafe"])["step"] == 20
    assert "images generated from it are noise" in result.output  # honest about what a random model draws
