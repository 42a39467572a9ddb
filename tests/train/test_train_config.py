"""TrainConfig and check_shards: clear errors for the values a user gets wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from train_helpers import write_shard_set

from cafe_train import TrainConfig, check_shards
from cafe_train.config_io import load_train_config


def config(shards: list[Path], tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(shards=shards, output_dir=tmp_path / "run", preset="tiny", **overrides)


def test_valid_config_normalizes_paths(four_triples: Path, tmp_path: Path) -> None:
    made = TrainConfig(shards=[str(four_triples)], output_dir=str(tmp_path / "run"), preset="tiny")
    assert made.shards == [four_triples]
    assert made.output_dir == tmp_path / "run"


def test_unknown_preset_names_it_and_the_known_ones(four_triples: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown model preset 'huge'.*tiny"):
        TrainConfig(shards=[four_triples], output_dir=tmp_path, preset="huge")


def test_batch_size_zero_is_refused(four_triples: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"batch_size=0: must be an integer >= 1"):
        config([four_triples], tmp_path, batch_size=0)


@pytest.mark.parametrize("resolution", [60, 0, 513])
def test_resolution_not_divisible_by_8_is_refused(four_triples: Path, tmp_path: Path, resolution: int) -> None:
    with pytest.raises(ValueError, match=rf"resolution_px={resolution}: must be a positive multiple of 8"):
        config([four_triples], tmp_path, resolution_px=resolution)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mixed_precision", "fp8", "mixed_precision='fp8': must be one of no, fp16, bf16"),
        ("prompt_dropout", 1.5, "prompt_dropout=1.5: must be a probability"),
        ("grad_accum_steps", 0, "grad_accum_steps=0"),
        ("lr", 0.0, "lr=0.0: must be > 0"),
        ("lr_schedule", "step", "lr_schedule='step'"),
        ("ema_decay", 1.0, "ema_decay=1.0: must be a number in (0, 1)"),
        ("ema_decay", 0.0, "ema_decay=0.0: must be a number in (0, 1)"),
        ("ema_decay", "0.99", "ema_decay='0.99': must be a number"),
        ("min_snr_gamma", 0.0, "min_snr_gamma=0.0: must be a finite number > 0"),
        ("min_snr_gamma", float("inf"), "min_snr_gamma=inf: must be a finite number > 0"),
        ("validate_every", 0, "validate_every=0: must be an integer >= 1"),
        ("validation_samples", 0, "validation_samples=0: must be an integer >= 1"),
        ("validation_images_per_reference", 0, "validation_images_per_reference=0: must be an integer >= 1"),
        ("validation_steps", 2.5, "validation_steps=2.5: must be an integer >= 1"),
    ],
)
def test_bad_values_are_named(four_triples: Path, tmp_path: Path, field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config([four_triples], tmp_path, **{field: value})


def test_optional_features_are_off_by_default_and_take_numbers(four_triples: Path, tmp_path: Path) -> None:
    made = config([four_triples], tmp_path)
    assert (made.ema_decay, made.min_snr_gamma, made.validate_every) == (None, None, None)
    on = config([four_triples], tmp_path, ema_decay=0.999, min_snr_gamma=5, validate_every=10)
    assert (on.ema_decay, on.min_snr_gamma, on.validate_every) == (0.999, 5, 10)


def test_set_overrides_coerce_optional_floats(four_triples: Path, tmp_path: Path) -> None:
    # YAML reads `1e-3` (no dot) as a string: a `float | None` field takes it as a number, and null as None.
    sets = ["ema_decay=1e-3", "min_snr_gamma=5", "validate_every=20", "validate_every=null"]
    made = load_train_config(sets=sets, shards=[str(four_triples)], output_dir=str(tmp_path), preset="tiny")
    assert made.ema_decay == 1e-3 and isinstance(made.ema_decay, float)
    assert made.min_snr_gamma == 5.0 and made.validate_every is None


def test_missing_shard_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"shard set '.*nowhere': no such folder"):
        config([missing], tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        check_shards([missing])


def test_check_shards_counts_samples(four_triples: Path, tmp_path: Path) -> None:
    other = write_shard_set(tmp_path / "other", range(10, 13))
    assert check_shards([four_triples, other]) == 7


def test_shard_set_failing_validation_is_named(tmp_path: Path) -> None:
    root = write_shard_set(tmp_path / "broken", range(4))
    tar = sorted(root.glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-1024])  # truncated after the index was written
    with pytest.raises(ValueError, match=r"shard set '.*broken' fails validation .*cafe shards validate"):
        check_shards([root])


def test_folder_that_is_not_a_shard_set_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"shard set '.*empty'"):
        check_shards([tmp_path / "empty"])


def test_malformed_excluded_key_is_refused(four_triples: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not-a-key"):
        config([four_triples], tmp_path, excluded_keys=["not-a-key"])


def test_a_set_missing_a_status_table_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Fast validation trusts the index and the stats files; training checks every file of each shard."""
    root = write_shard_set(tmp_path / "set", range(4))
    (root / "shard-000001.status.parquet").unlink()
    with pytest.raises(ValueError, match=r"shard-000001\.status\.parquet is missing.*cafe shards validate"):
        check_shards([root])


def test_a_run_folder_that_is_a_file_is_refused(four_triples: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a run\n")
    with pytest.raises(ValueError, match=r"output_dir '.*notes\.txt': it is a file, not a folder"):
        TrainConfig(shards=[four_triples], output_dir=notes, preset="tiny")
    with pytest.raises(ValueError, match=r"output_dir '.*notes\.txt/run': its parent .*notes\.txt is a file"):
        TrainConfig(shards=[four_triples], output_dir=notes / "run", preset="tiny")


@pytest.mark.parametrize(
    ("output", "says"), [(".", "it is the shard set"), ("run", "lies inside the shard set"), ("..", "holds")]
)
def test_a_run_folder_apart_from_its_shard_sets(tmp_path: Path, output: str, says: str) -> None:
    from cafe_core.apart import OutputInsideInput

    root = write_shard_set(tmp_path / "parent" / "set", range(2))
    with pytest.raises(OutputInsideInput, match=says):
        TrainConfig(shards=[root], output_dir=root / output, preset="tiny")


def test_training_resolution_defaults_to_the_presets(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    assert TrainConfig(shards=[tmp_path / "set"], output_dir=tmp_path / "run", preset="toy").resolution_px == 32
    assert TrainConfig(shards=[tmp_path / "set"], output_dir=tmp_path / "run", preset="tiny").resolution_px == 64
    given = TrainConfig(shards=[tmp_path / "set"], output_dir=tmp_path / "run", preset="tiny", resolution_px=48)
    assert given.resolution_px == 48
