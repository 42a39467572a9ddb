"""`cafe train run|launch` and `cafe generate` on tiny real shard sets and the tiny preset.

The model cache is private to the session (CAFE_MODEL_CACHE), so ~/.cache is never touched.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from factories import make_triple
from PIL import Image
from train.train_helpers import corrupt_member, write_shard_set
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core.flags import add_flag

runner = CliRunner()
TINY_TRAINING = [
    "--set",
    "max_steps=3",
    "--set",
    "resolution_px=32",
    "--set",
    "batch_size=2",
    "--set",
    "num_workers=0",
    "--set",
    "shuffle_buffer=4",
    "--set",
    "checkpoint_every=3",
]


def cafe(*args: object):
    return runner.invoke(app, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("private_model_cache")


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("shards") / "set", range(4))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, shard_set: Path) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    result = cafe("train", "run", "--shards", shard_set, "--output", run_dir, "--preset", "tiny", *TINY_TRAINING)
    return run_dir, result


@pytest.fixture
def reference_png(tmp_path: Path) -> Path:
    path = tmp_path / "reference.png"
    make_triple(7).reference.save(path)
    return path


def test_train_run_writes_a_checkpoint_and_metrics(trained_run: tuple[Path, object]) -> None:
    run_dir, result = trained_run
    assert result.exit_code == 0, result.output
    checkpoint = run_dir / "checkpoints" / "step-000003"
    assert (checkpoint / "trainable.safetensors").stat().st_size > 0
    assert json.loads((checkpoint / "config.json").read_text())["preset"] == "tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    # The summary names the steps, both losses and the checkpoint; the random-model warning is there.
    assert "1..3" in result.output and f"{records[-1]['loss']:.4f}" in result.output
    assert str(checkpoint) in result.output and "random" in result.output


def test_generation_finds_the_checkpoint_train_wrote(trained_run: tuple[Path, object], tmp_path: Path) -> None:
    """What cafe_train writes, cafe_model.trained finds and loads (EMA first, unless told otherwise)."""
    from safetensors.torch import load_file

    from cafe_model.trained import find_checkpoint, load_trained_model
    from cafe_train.checkpoint import latest_checkpoint

    run_dir, _ = trained_run
    found = find_checkpoint(run_dir)
    assert found.path == latest_checkpoint(run_dir) and found.step == 3 and found.preset == "tiny"
    assert found.weights_path.name == "trainable.safetensors"  # no EMA saved by this run
    # A checkpoint with an EMA: generation takes it unless told otherwise.
    with_ema = shutil.copytree(found.path, tmp_path / "step-000003")
    shutil.copy(with_ema / "trainable.safetensors", with_ema / "ema.safetensors")
    assert find_checkpoint(with_ema).weights_path.name == "ema.safetensors"
    assert find_checkpoint(with_ema, weights="trainable").weights_path.name == "trainable.safetensors"
    with pytest.raises(FileNotFoundError, match=r"ema\.safetensors is missing"):
        find_checkpoint(run_dir, weights="ema")
    # The loaded model carries the checkpoint's weights, not a fresh projector.
    model, _ = load_trained_model(run_dir)
    saved = load_file(found.weights_path)
    loaded = model.trainable_state_dict()
    assert sorted(saved) == sorted(loaded)
    assert all(torch.equal(saved[name], loaded[name]) for name in saved)


@pytest.fixture(scope="module")
def corrupt_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_shard_set(tmp_path_factory.mktemp("corrupt") / "set", range(2))
    with open(root / "shard-000000.tar", "ab") as tar:
        tar.write(b"\0" * 512)  # the index's filesize and md5 no longer match
    return root


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "bogus"], "unknown model preset 'bogus'"),
        (["--set", "batch_size=0"], "batch_size=0"),
        (["--set", "resolution_px=60"], "resolution_px=60"),
        (["--set", "learning_rate=1"], "unknown training setting(s): learning_rate"),
        (["--set", "lr"], "expected KEY=VALUE"),
    ],
)
def test_train_run_bad_settings_exit_2(tmp_path: Path, shard_set: Path, args: list[str], expected: str) -> None:
    result = cafe("train", "run", "--shards", shard_set, "--output", tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "run").exists()  # nothing started


def test_train_run_bad_shards_exit_2(tmp_path: Path, corrupt_set: Path) -> None:
    missing = cafe("train", "run", "--shards", tmp_path / "nowhere", "--output", tmp_path / "run")
    assert missing.exit_code == 2 and "nowhere" in missing.output and "no such folder" in missing.output
    broken = cafe("train", "run", "--shards", corrupt_set, "--output", tmp_path / "run")
    assert broken.exit_code == 2 and "fails validation" in broken.output and "cafe shards validate" in broken.output
    unnamed = cafe("train", "run", "--output", tmp_path / "run")
    assert unnamed.exit_code == 2 and "--shards" in unnamed.output


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_run_names_and_counts_what_it_skips(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One shard read in order: a sample that does not decode, a flagged one, a good one; one step of one."""
    root = write_shard_set(tmp_path / "set", range(3), max_samples=3)
    keys = [make_triple(i).key for i in range(3)]
    corrupt_member(root, "shard-000000.tar", keys[0])
    add_flag(root, keys[1], "wrong subject")
    run_dir = tmp_path / "run"
    one_step = ["max_steps=1", "batch_size=1", "shuffle_buffer=0", "num_workers=0", "resolution_px=32"]
    with caplog.at_level(logging.WARNING, logger="cafe_train.loader"):
        result = cafe(
            "train", "run", "--shards", root, "--output", run_dir, *(a for v in one_step for a in ("--set", v))
        )
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.name == "cafe_train.loader"]
    assert len(warnings) == 1 and keys[0] in warnings[0] and str(root / "shard-000000.tar") in warnings[0]
    [record] = read_metrics(run_dir)
    assert (record["skipped_samples"], record["flagged_samples"]) == (1, 1)
    assert "skipped 1 unreadable sample read(s)" in result.output and "cafe shards validate" in result.output
    assert "passed over 1 flagged or excluded sample read(s)" in result.output


def test_train_run_refuses_a_set_missing_a_status_table(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "set", range(4))
    (root / "shard-000001.status.parquet").unlink()  # fast validation checks for it too
    result = cafe("train", "run", "--shards", root, "--output", tmp_path / "run", *TINY_TRAINING)
    assert result.exit_code == 2, result.output
    assert "shard-000001.status.parquet is missing" in result.output and f"cafe shards validate {root}" in result.output
    assert not (tmp_path / "run").exists()


def test_train_run_into_a_file_exits_2_before_anything_starts(tmp_path: Path, shard_set: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a run\n")
    for output in (notes, notes / "run"):
        result = cafe("train", "run", "--shards", shard_set, "--output", output, *TINY_TRAINING)
        assert result.exit_code == 2, result.output
        assert "is a file, not a folder" in result.output
        assert "random" not in result.output  # refused before the preset's warning, let alone its models
    assert sorted(tmp_path.iterdir()) == [notes] and notes.read_text() == "not a run\n"  # no lock, no run folder


def test_train_output_apart_from_its_shard_sets_exit_2(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "parent" / "set", range(2))
    before = sorted(p.name for p in root.iterdir())
    cases = [
        (["train", "run", "--output", root / "run"], "lies inside the shard set"),
        (["train", "run", "--output", root.parent], "holds the shard set"),
        (["train", "launch", "--backend", "accelerate", "--num-workers", 1, "--output", root], "it is the shard set"),
    ]
    for args, says in cases:
        result = cafe(*args, "--shards", root, *TINY_TRAINING)
        assert result.exit_code == 2, result.output
        assert says in result.output
    assert sorted(p.name for p in root.iterdir()) == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["set"]


def test_train_run_resumed_reports_the_steps_it_ran(tmp_path: Path, shard_set: Path) -> None:
    """A run killed after logging step 3 but before its checkpoint resumes at step 2: the summary is 3..5."""
    run_dir = tmp_path / "run"
    common = ["train", "run", "--shards", shard_set, "--output", run_dir, *TINY_TRAINING, "--set", "checkpoint_every=2"]
    first = cafe(*common)
    assert first.exit_code == 0, first.output
    shutil.rmtree(run_dir / "checkpoints" / "step-000003")  # as if killed while saving it
    resumed = cafe(*common, "--set", "max_steps=5")
    assert resumed.exit_code == 0, resumed.output
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # step 3 logged again, by the resumed run
    assert "3..5" in resumed.output and "1..5" not in resumed.output
    assert f"{records[2]['loss']:.4f}" in resumed.output  # the first loss is the resumed run's step 3


def test_train_launch_argument_errors_exit_2(tmp_path: Path, shard_set: Path) -> None:
    common = ["--shards", shard_set, "--output", tmp_path / "run"]
    backend = cafe("train", "launch", "--backend", "slurm", "--num-workers", 2, *common)
    assert backend.exit_code == 2 and "slurm" in backend.output
    workers = cafe("train", "launch", "--backend", "ray", "--num-workers", 0, *common)
    assert workers.exit_code == 2 and "num-workers" in workers.output
    accelerate_yaml = tmp_path / "accelerate.yaml"
    accelerate_yaml.write_text("num_processes: 2\n")
    mixed = cafe(
        "train", "launch", "--backend", "ray", "--num-workers", 2, "--accelerate-config", accelerate_yaml, *common
    )
    assert mixed.exit_code == 2 and "--backend accelerate only" in mixed.output
    bad = cafe("train", "launch", "--backend", "accelerate", "--num-workers", 2, *common, "--set", "batch_size=0")
    assert bad.exit_code == 2 and "batch_size=0" in bad.output


@pytest.mark.slow
def test_train_launch_accelerate_one_worker_trains(tmp_path: Path, shard_set: Path) -> None:
    """The wiring to cafe_train.launch_accelerate: a worker process trains, the summary reads its metrics."""
    run_dir = tmp_path / "run"
    result = cafe(
        "train", "launch", "--backend", "accelerate", "--num-workers", 1, "--shards", shard_set, "--output", run_dir,
        *TINY_TRAINING,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run_dir / "checkpoints" / "step-000003" / "trainable.safetensors").is_file()
    assert "1..3" in result.output and "1 accelerate workers" in result.output


def test_generate_writes_pngs_of_the_asked_size(
    trained_run: tuple[Path, object], reference_png: Path, tmp_path: Path
) -> None:
    run_dir, _ = trained_run
    args = ["generate", "--checkpoint", run_dir, "--reference", reference_png, "--prompt", "a photo of red cube"]
    one = cafe(*args, "--out", tmp_path / "one.png", "--size", 48, "--steps", 2)
    assert one.exit_code == 0, one.output
    with Image.open(tmp_path / "one.png") as image:
        assert image.size == (48, 48) and image.mode == "RGB"
        settings = json.loads(image.text["cafe"])
    assert settings["step"] == 3 and settings["seed"] == 0 and settings["sampler"]["num_steps"] == 2
    two = cafe(*args, "--out", tmp_path / "two.png", "--num-images", 2, "--steps", 2, "--reference-guidance", 3)
    assert two.exit_code == 0, two.output
    sizes = [Image.open(tmp_path / f"two-{i}.png").size for i in range(2)]
    assert sizes == [(64, 64), (64, 64)]  # the preset's size by default
    assert not (tmp_path / "two.png").exists()


def test_generate_errors_exit_2(tmp_path: Path, reference_png: Path) -> None:
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    args = ["generate", "--prompt", "a photo of red cube", "--out", tmp_path / "out.png"]
    no_checkpoints = cafe(*args, "--checkpoint", empty_run, "--reference", reference_png)
    assert no_checkpoints.exit_code == 2 and "no checkpoints" in no_checkpoints.output
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a photo\n")
    unreadable = cafe(*args, "--checkpoint", empty_run, "--reference", not_an_image)
    assert unreadable.exit_code == 2 and f"--reference {not_an_image}: not a readable image" in unreadable.output
    odd_size = cafe(*args, "--checkpoint", empty_run, "--reference", reference_png, "--size", 60)
    assert odd_size.exit_code == 2 and "--size 60" in odd_size.output and "56" in odd_size.output
    assert not (tmp_path / "out.png").exists()
