"""`cafe toy` end to end at a tiny scale: every file of the run, the table's rows, resuming, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_loop.toy_experiment import GRID_NAME, PLOT_NAME, REPORT_NAME, ToyConfig, run_toy
from cafe_pipelines.toy_eval import CONDITIONS


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Tiny models on one torch thread (tests/conftest.py)."""


def tiny_toy(output: Path, cache: Path, **overrides) -> ToyConfig:
    """A few steps and images of everything: the files and the flow, not the learning (bench/toy.py has that)."""
    settings = {
        "output": output,
        "steps_per_round": 2,
        "rounds": 1,
        "num_subjects": 2,
        "images_per_subject": 4,
        "eval_subjects": 2,
        "eval_steps": 2,
        "train": {"batch_size": 2, "checkpoint_every": 2, "num_workers": 0},
        "improve": {"num_references": 2, "prompts_per_reference": 1, "candidates_per_pair": 2, "num_steps": 2},
        "model_cache_dir": str(cache),
        **overrides,
    }
    return ToyConfig(**settings)


@pytest.mark.slow
@pytest.mark.ray
def test_a_tiny_toy_run_writes_every_file_and_resumes(tmp_path: Path, model_cache: Path) -> None:
    lines: list[str] = []
    config = tiny_toy(tmp_path / "toy", model_cache)
    report = run_toy(config, on_progress=lines.append)
    root = tmp_path / "toy"
    assert json.loads((root / REPORT_NAME).read_text())["table"] == report["table"]
    # Two steps of training draw noise: the toy scorers find no object, so round 1 accepts nothing and the
    # loop stops before retraining; the report says so, and the table has round 0's rows only.
    assert report["stop_reason"] == "nothing_accepted"
    assert [row["row"] for row in report["table"]] == ["no reference", "other reference", "round 0"]
    for row in report["table"]:
        assert 0.0 <= row["identity"] <= 1.0 and 0.0 <= row["text"] <= 1.0
    assert [r["round"] for r in report["rounds"]] == [0, 1] and report["rounds"][1]["num_candidates"] == 4
    assert report["rounds"][1]["num_accepted"] == 0 and sum(report["rounds"][1]["reasons"].values()) == 4
    assert report["rounds"][0]["steps"] == 2 and report["rounds"][1]["checkpoint"] is None
    first = json.loads((root / "eval" / "round-0.json").read_text())
    assert sorted(first["conditions"]) == sorted(CONDITIONS) and first["settings"]["subjects"] == 2
    assert not (root / "eval" / "round-1.json").exists()
    with Image.open(root / GRID_NAME) as grid:
        assert grid.size == (4 * 96, 2 * 96)  # reference + 3 round-0 conditions; 2 subjects
    with Image.open(root / PLOT_NAME) as plot:
        assert plot.width > 4 * 100
    assert (root / "data" / "toy-data.json").is_file() and (root / "loop" / "loop-report.json").is_file()

    lines.clear()
    again = run_toy(config, on_progress=lines.append)  # everything is there: nothing is drawn or trained again
    assert again["table"] == report["table"]
    assert any("data: " in line and "is there" in line for line in lines)
    assert sum("eval round" in line and "is there" in line for line in lines) == 1


def test_data_made_with_other_settings_is_refused_and_kept(tmp_path: Path, model_cache: Path) -> None:
    from cafe_pipelines.toy_data import ToyDataConfig, make_toy_data

    root = tmp_path / "toy"
    make_toy_data(ToyDataConfig(output=str(root / "data"), num_subjects=1, images_per_subject=1))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(ValueError, match=r"made with other data settings \(images_per_subject, num_subjects\)"):
        run_toy(tiny_toy(root, model_cache))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written, nothing removed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps_per_round": 0}, "steps_per_round: 0 must be an integer >= 1"),
        ({"eval_subjects": 1}, "eval_subjects: 1 must be an integer >= 2"),
        ({"guidance": 0.5}, "guidance: 0.5 must be >= 1"),
        ({"train": {"lr_typo": 1}}, "train: unknown TrainConfig field"),
        ({"improve": {"num_referencs": 1}}, "improve: unknown ImproveConfig field"),
        ({"num_subjects": 500}, "subjects: 500 is out of range"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_toy(tmp_path / "toy", tmp_path / "cache", **overrides)
    assert not (tmp_path / "toy").exists()


def test_the_command_exits_2_on_a_bad_setting(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["toy", "--output", str(tmp_path / "toy"), "--steps-per-round", "0"])
    assert result.exit_code == 2 and "steps_per_round: 0" in result.output
    result = runner.invoke(app, ["toy", "--output", str(tmp_path / "toy"), "--set", "colour=red"])
    assert result.exit_code == 2 and "unknown toy setting(s): colour" in result.output
    assert not (tmp_path / "toy").exists()
