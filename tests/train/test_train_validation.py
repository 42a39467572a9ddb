"""Validation grids and TensorBoard logs of a short run; validation leaves the training's losses as they were."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_triple
from PIL import Image
from train_helpers import read_events, scalars_by_tag, tiny_config, write_shard_set

from cafe_core.flags import add_flag
from cafe_model.load import load_model
from cafe_train import train
from cafe_train.validation import Validation, image_grid, preserved_rng_states, validation_references

SCALAR_TAGS = {"loss", "lr", "grad_norm", "samples_per_s", "data_wait_share"}


def test_run_writes_validation_grids_and_tensorboard_events(
    tmp_path: Path, four_triples: Path, model_cache: Path
) -> None:
    options = {"max_steps": 3, "checkpoint_every": 10, "prompt_dropout": 0.3, "reference_dropout": 0.3}
    validated = train(
        tiny_config(
            four_triples,
            tmp_path / "run",
            model_cache,
            validate_every=2,
            validation_steps=2,
            validation_samples=2,
            validation_images_per_reference=3,
            **options,
        )
    )
    plain = train(tiny_config(four_triples, tmp_path / "plain", model_cache, **options))
    # Generating in between draws nothing from the training's RNG streams: the same losses, bit for bit.
    assert validated.losses == plain.losses

    grids = sorted((tmp_path / "run" / "validation").iterdir())
    assert [p.name for p in grids] == ["step-000002.png"]
    with Image.open(grids[0]) as grid:
        assert grid.size == ((1 + 3) * 32, 2 * 32)  # reference + 3 generations per row, 2 references
        assert grid.mode == "RGB"

    events = read_events(tmp_path / "run" / "tensorboard")
    scalars = scalars_by_tag(events)
    assert scalars.keys() >= SCALAR_TAGS
    for tag in SCALAR_TAGS:
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
    assert [value for _, value in scalars["loss"]] == pytest.approx(validated.losses, rel=1e-6)
    images = [(e.step, v.image) for e in events for v in e.summary.value if v.tag == "validation"]
    assert [step for step, _ in images] == [2]
    image = images[0][1]
    assert (image.width, image.height) == (128, 64)
    with Image.open(io.BytesIO(image.encoded_image_string)) as decoded:
        assert decoded.size == (128, 64)


def rng_fingerprint() -> tuple[object, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()


def test_validation_is_repeatable_and_leaves_rng_and_train_mode_alone(
    tmp_path: Path, four_triples: Path, model_cache: Path
) -> None:
    # The tiny CPU loop happens to draw nothing from the global RNGs, so a run cannot show a leak; this can.
    config = tiny_config(four_triples, tmp_path / "run", model_cache, validate_every=1, validation_steps=2)
    model = load_model("tiny", cache_dir=model_cache).train()
    validation = Validation(config)
    before = rng_fingerprint()
    path, first = validation(model, 7)
    assert rng_fingerprint() == before
    assert model.training and model.unet.training and not model.vae.training
    _, second = validation(model.eval(), 8)
    assert not model.training  # the mode it was in, not always train
    assert path == tmp_path / "run" / "validation" / "step-000007.png"
    assert first.size == validation.grid_size_px() == (3 * 32, 2 * 32)
    assert np.array_equal(np.asarray(first), np.asarray(second))  # a fixed seed: the same weights, the same grid


def test_preserved_rng_states_undo_draws_inside() -> None:
    before = rng_fingerprint()
    with preserved_rng_states(torch.device("cpu")):
        random.random(), np.random.rand(), torch.rand(3)
    assert rng_fingerprint() == before


def test_validation_references_skip_flagged_and_excluded_keys(tmp_path: Path, model_cache: Path) -> None:
    root = write_shard_set(tmp_path / "set", range(5))
    keys = [make_triple(i).key for i in range(5)]
    add_flag(root, keys[0], "wrong subject")
    config = tiny_config(root, tmp_path / "run", model_cache, excluded_keys=[keys[1]], validation_samples=2)
    references = validation_references(config)
    assert [r.key for r in references] == keys[2:4]
    assert references[0].prompt == make_triple(2).prompt and references[0].reference.mode == "RGBA"


def test_validation_without_a_usable_reference_is_refused(tmp_path: Path, model_cache: Path) -> None:
    root = write_shard_set(tmp_path / "set", range(1))
    config = tiny_config(root, tmp_path / "run", model_cache, validate_every=5, excluded_keys=[make_triple(0).key])
    with pytest.raises(ValueError, match=r"validate_every=5: shard set '.*set' has no unflagged, not excluded"):
        validation_references(config)


def test_image_grid_lays_cells_out_in_rows() -> None:
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    grid = image_grid([[red, blue, blue], [blue, red]], 4)
    assert grid.size == (12, 8)
    assert grid.getpixel((0, 0)) == (255, 0, 0) and grid.getpixel((4, 0)) == (0, 0, 255)
    assert grid.getpixel((4, 4)) == (255, 0, 0) and grid.getpixel((8, 4)) == (255, 255, 255)  # a short row
    with pytest.raises(ValueError, match=r"grid cell \(0, 0\) is \(5, 5\)"):
        image_grid([[Image.new("RGB", (5, 5))]], 4)
