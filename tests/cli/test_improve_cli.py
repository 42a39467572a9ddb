"""`cafe improve round`: the errors a user can cause stop it with exit code 2 and a message, before Ray or a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import make_triple, ok_input
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core import ShardSet

runner = CliRunner()


def cafe(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    shards = tmp_path / "real"
    with ShardSet(shards).writer(mode="overwrite", fsync=False) as writer:
        for index in range(2):
            triple = make_triple(index)
            writer.add(ok_input(triple), [triple])
    step = tmp_path / "run" / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    (step / "config.json").write_text(json.dumps({"preset": "tiny", "resolution_px": 64}))
    (step / "trainable.safetensors").write_bytes(b"")  # found, never loaded: every case fails before
    (tmp_path / "empty-run").mkdir()
    return {"base": tmp_path, "shards": shards, "run": tmp_path / "run"}


def test_bad_arguments_exit_2_naming_them(world) -> None:
    base, shards, run = world["base"], world["shards"], world["run"]
    cases = [
        ((), "--checkpoint RUN is required"),
        (("--checkpoint", run, "--output", base / "out"), "--shards DIR is required"),
        (("--checkpoint", run, "--shards", shards, "--output", shards), "input set"),
        (("--checkpoint", run, "--shards", shards, "--output", shards / "inner"), "inside"),
        (("--checkpoint", run, "--shards", shards, "--output", base / "out", "--preset", "huge"), "scorer preset"),
        (("--checkpoint", run, "--shards", shards, "--output", base / "out", "--mode", "extend"), "overwrite"),
        (("--checkpoint", run, "--shards", shards, "--output", base / "out", "--set", "filter.min_dino=7"), "min_dino"),
        (("--checkpoint", run, "--shards", shards, "--output", base / "out", "--set", "nope=1"), "nope"),
        (("--checkpoint", base / "empty-run", "--shards", shards, "--output", base / "out"), "no checkpoints"),
        (("--checkpoint", run, "--shards", base / "nowhere", "--output", base / "out"), "no such folder"),
    ]
    for args, expected in cases:
        result = cafe("improve", "round", *args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)
    assert not (base / "out").exists()


def test_an_open_input_set_is_refused(world) -> None:
    (world["shards"] / "dataset.json").unlink()  # as while a build is still writing it
    result = cafe(
        "improve", "round", "--checkpoint", world["run"], "--shards", world["shards"], "--output", world["base"] / "out"
    )
    assert result.exit_code == 2, result.output
    assert "[set.open]" in result.output and "dataset.json" in result.output
