"""`cafe demo` builds a valid set from real photos and writes its contact sheet."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core.stats import shard_set_stats
from cafe_core.validate import validate_set


def test_demo_builds_a_valid_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    shards = tmp_path / "demo" / "shards"
    assert validate_set(shards).ok
    stats = shard_set_stats(shards)
    assert stats["num_samples"] >= 5  # real photos; the threshold gate may turn one or two away
    assert stats["num_inputs"] == stats["status"]["ok"] + stats["status"]["skipped"]
    assert (tmp_path / "demo" / "grid.png").stat().st_size > 10_000
    # Rerunning overwrites rather than duplicating.
    again = CliRunner().invoke(app, ["demo", "--output", str(tmp_path / "demo")])
    assert again.exit_code == 0
    assert shard_set_stats(shards)["num_samples"] == stats["num_samples"]
