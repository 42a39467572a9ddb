"""`cafe demo` runs the data engine on the bundled photos and leaves a valid set and a contact sheet."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core.stats import shard_set_stats
from cafe_core.validate import validate_set


@pytest.mark.ray
@pytest.mark.slow
def test_demo_builds_a_valid_set(local_ray, tmp_path: Path) -> None:
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
