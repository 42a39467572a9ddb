"""`cafe eval` and `cafe loop run` on tiny real sets and the tiny preset (private model cache).

The loop's rounds are tested in tests/loop; here: the command's options, output and exit codes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from skimage import data
from train.train_helpers import write_shard_set
from typer.testing import CliRunner

from cafe_cli.main import app

runner = CliRunner()
TINY_TRAINING = ["max_steps=2", "resolution_px=32", "batch_size=2", "num_workers=0", "shuffle_buffer=4"]


def cafe(*args: object):
    return runner.invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("private_model_cache")


@pytest.fixture(scope="module")
def real_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("real") / "set", range(4))


@pytest.fixture(scope="module")
def trained_run(real_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    sets = [arg for value in TINY_TRAINING for arg in ("--set", value)]
    result = cafe("train", "run", "--shards", real_set, "--output", run_dir, *sets)
    assert result.exit_code == 0, result.output
    return run_dir


def write_eval_set(root: Path) -> Path:
    (root / "cup").mkdir(parents=True)
    Image.fromarray(data.coffee()).resize((64, 48)).save(root / "cup" / "0.jpg")
    (root / "prompts_object.txt").write_text("a {} on a beach\n")
    (root / "subjects.txt").write_text("cup,coffee cup,object\n")
    return root


@pytest.mark.slow
def test_eval_prints_and_writes_the_table(trained_run: Path, tmp_path: Path) -> None:
    eval_set = write_eval_set(tmp_path / "bench")
    result = cafe("eval", "--checkpoint", trained_run, "--eval-set", eval_set, "--images-per-prompt", 2, "--steps", 2)
    assert result.exit_code == 0, result.output
    assert "DINO" in result.output and "overall" in result.output and "coffee cup" in result.output
    out_dir = trained_run / "eval" / "step-000002"  # the default: beside the run's checkpoints
    with open(out_dir / "eval.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["subject"], row["num_images"]) for row in rows] == [("cup", "2"), ("overall", "2")]
    saved = json.loads((out_dir / "eval.json").read_text())
    assert saved["settings"]["step"] == 2 and saved["settings"]["preset"] == "tiny"
    assert saved["settings"]["scorer_preset"] == "tiny"  # the default for a random model preset
    assert len(list((out_dir / "images" / "cup").glob("*.png"))) == 2


def test_eval_bad_layout_and_missing_checkpoint_exit_2(trained_run: Path, tmp_path: Path) -> None:
    eval_set = write_eval_set(tmp_path / "bench")
    (eval_set / "prompts_object.txt").unlink()
    result = cafe("eval", "--checkpoint", trained_run, "--eval-set", eval_set)
    assert result.exit_code == 2 and "prompts_object.txt: missing" in result.output
    result = cafe("eval", "--checkpoint", tmp_path / "nothing", "--eval-set", write_eval_set(tmp_path / "b2"))
    assert result.exit_code == 2 and "no such folder" in result.output
    result = cafe("eval", "--checkpoint", trained_run, "--eval-set", tmp_path / "b2", "--preset", "huge")
    assert result.exit_code == 2 and "unknown scorer preset 'huge'" in result.output


def test_loop_bad_settings_exit_2(real_set: Path, tmp_path: Path) -> None:
    config = tmp_path / "loop.yaml"
    config.write_text(f"output: {tmp_path / 'loop'}\nshards: [{real_set}]\npreset: tiny\n")
    result = cafe("loop", "run", "--config", config, "--set", "rounds=-1")
    assert result.exit_code == 2 and "rounds=-1" in result.output
    result = cafe("loop", "run", "--config", config, "--set", "train.batch_size=0")
    assert result.exit_code == 2 and "train: batch_size=0" in result.output
    result = cafe("loop", "run", "--config", config, "--set", "improve.num_stepz=3")
    assert result.exit_code == 2 and "improve:" in result.output and "num_stepz" in result.output
    result = cafe("loop", "run", "--set", f"output={tmp_path / 'x'}")
    assert result.exit_code == 2 and "missing required loop setting(s): shards, preset" in result.output
    assert not (tmp_path / "loop").exists()


def test_loop_output_apart_from_its_real_sets_exit_2(tmp_path: Path) -> None:
    real = write_shard_set(tmp_path / "real", range(2))
    before = sorted(p.name for p in real.iterdir())
    for output, says in ((real / "loop", "lies inside the shard set"), (real, "it is the shard set")):
        result = cafe("loop", "run", "--set", f"output={output}", "--set", f"shards=[{real}]", "--set", "preset=tiny")
        assert result.exit_code == 2, result.output
        assert says in result.output and str(real) in result.output
    assert sorted(p.name for p in real.iterdir()) == before  # nothing written into the set


@pytest.mark.slow
def test_loop_round_0_only_trains_and_reports(real_set: Path, tmp_path: Path) -> None:
    config = tmp_path / "loop.yaml"
    train = ", ".join(value.replace("=", ": ") for value in TINY_TRAINING)
    config.write_text(f"output: {tmp_path / 'loop'}\nshards: [{real_set}]\npreset: tiny\ntrain: {{{train}}}\n")
    result = cafe("loop", "run", "--config", config, "--set", "rounds=0")
    assert result.exit_code == 0, result.output
    assert "stopped: all 0 round(s) done" in result.output and "Next: cafe eval --checkpoint" in result.output
    report = json.loads((tmp_path / "loop" / "loop-report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0] and report["rounds"][0]["last_step"] == 2
