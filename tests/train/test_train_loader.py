"""The shard-to-batch loader: shapes and dtypes, flagged and excluded keys, corrupt samples named and counted,
determinism, augmentation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import make_triple
from PIL import Image
from train_helpers import write_shard_set
from transformers import CLIPImageProcessor, CLIPTokenizer

from cafe_core.flags import add_flag
from cafe_model.load import load_model
from cafe_train import TrainConfig
from cafe_train.loader import Augmentation, augment_reference, build_loader


@pytest.fixture(scope="module")
def encoders(model_cache: Path) -> tuple[CLIPTokenizer, CLIPImageProcessor]:
    model = load_model("tiny", cache_dir=model_cache)
    return model.tokenizer, model.reference_encoder.image_processor


def loader_for(shards: list[Path], tmp_path: Path, encoders, num_samples: int, **overrides):
    options = {"batch_size": 2, "resolution_px": 32, "num_workers": 0, "shuffle_buffer": 4, **overrides}
    config = TrainConfig(shards=shards, output_dir=tmp_path / "run", preset="tiny", **options)
    tokenizer, processor = encoders
    return build_loader(config, tokenizer=tokenizer, reference_processor=processor, num_samples=num_samples)


def test_batch_shapes_and_dtypes(four_triples: Path, tmp_path: Path, encoders) -> None:
    loader = loader_for([four_triples], tmp_path, encoders, 4, prompt_dropout=0.0)
    batches = list(loader)
    assert len(batches) == 2  # one epoch of 4 samples in batches of 2
    batch = batches[0]
    tokenizer, processor = encoders
    assert len(batch["keys"]) == 2
    assert batch["target_pixels"].shape == (2, 3, 32, 32) and batch["target_pixels"].dtype == torch.float32
    assert batch["target_pixels"].min() >= -1.0 and batch["target_pixels"].max() <= 1.0
    assert batch["reference_pixels"].shape[:2] == (2, 3)
    assert batch["reference_pixels"].shape[2:] == (processor.crop_size["height"], processor.crop_size["width"])
    assert batch["prompt_ids"].shape == (2, tokenizer.model_max_length) and batch["prompt_ids"].dtype == torch.int64
    assert batch["mask"].shape == (2, 1, 4, 4) and batch["mask"].dtype == torch.float32
    assert batch["mask"].min() >= 0.0 and batch["mask"].max() <= 1.0 and batch["mask"].max() > 0.5
    assert batch["drop_reference"].shape == (2,) and batch["drop_reference"].dtype == torch.bool
    expected = tokenizer(["a photo of red cube"], padding="max_length", max_length=tokenizer.model_max_length)
    assert batch["prompt_ids"][0].tolist() == expected.input_ids[0]


def test_flagged_and_excluded_keys_never_reach_a_batch(tmp_path: Path, encoders) -> None:
    root = write_shard_set(tmp_path / "set", range(6))
    keys = [make_triple(i).key for i in range(6)]
    add_flag(root, keys[0], "mask misses the subject")
    add_flag(root, keys[3], "wrong subject")
    loader = loader_for([root], tmp_path, encoders, 60, excluded_keys=[keys[5]])
    seen = {key for batch in loader for key in batch["keys"]}
    assert seen == {keys[1], keys[2], keys[4]}


def test_a_corrupt_sample_is_named_and_counted_with_the_flagged_ones(
    bad_and_flagged: tuple[Path, list[str]], tmp_path: Path, encoders, caplog: pytest.LogCaptureFixture
) -> None:
    root, keys = bad_and_flagged
    loader = loader_for([root], tmp_path, encoders, 4, batch_size=1, shuffle_buffer=0)
    with caplog.at_level(logging.WARNING, logger="cafe_train.loader"):
        batches = list(loader)
    # Every read of the shard passes over the corrupt sample and the flagged one before the good one.
    assert [b["keys"] for b in batches] == [[keys[2]]] * 4
    assert [(b["num_skipped"], b["num_flagged"]) for b in batches] == [(1, 1)] * 4
    warnings = [r.getMessage() for r in caplog.records if r.name == "cafe_train.loader"]
    assert len(warnings) == 1, warnings  # once per shard and key, not once per read
    assert keys[0] in warnings[0] and str(root / "shard-000000.tar") in warnings[0]
    assert "target.jpg does not decode" in warnings[0]


@pytest.mark.slow
def test_counts_cross_dataloader_workers(bad_and_flagged: tuple[Path, list[str]], tmp_path: Path, encoders) -> None:
    root, _ = bad_and_flagged
    loader = loader_for([root], tmp_path, encoders, 4, batch_size=1, shuffle_buffer=0, num_workers=2)
    assert [(b["num_skipped"], b["num_flagged"]) for b in loader] == [(1, 1)] * 4


def test_same_seed_same_batches_and_resume_position(four_triples: Path, tmp_path: Path, encoders) -> None:
    def run(position: tuple[int, int] | None = None) -> list[list[str]]:
        loader = loader_for([four_triples], tmp_path, encoders, 8, reference_dropout=0.5, prompt_dropout=0.5)
        if position:
            loader.dataset.set_position(*position)
        return [(b["keys"], b["reference_pixels"], b["drop_reference"]) for b in loader]

    first, second = run(), run()
    assert [k for k, _, _ in first] == [k for k, _, _ in second]
    for (_, a, da), (_, b, db) in zip(first, second, strict=True):
        assert torch.equal(a, b) and torch.equal(da, db)
    resumed = run((0, 2))  # two batches into epoch 0: the rest of the same epoch, identical
    assert [k for k, _, _ in resumed] == [k for k, _, _ in first[2:]]
    assert all(torch.equal(a, b) for (_, a, _), (_, b, _) in zip(resumed, first[2:], strict=True))


def test_dropout_rates_are_honoured(four_triples: Path, tmp_path: Path, encoders) -> None:
    loader = loader_for([four_triples], tmp_path, encoders, 16, prompt_dropout=1.0, reference_dropout=1.0)
    tokenizer, _ = encoders
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length).input_ids[0]
    for batch in loader:
        assert batch["drop_reference"].all()
        assert all(row == empty for row in batch["prompt_ids"].tolist())


def test_augmented_reference_gets_a_new_background_through_the_alpha() -> None:
    cut_out = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    cut_out.paste((200, 30, 30, 255), (5, 5, 15, 15))
    rng = np.random.default_rng(0)
    outputs = [np.asarray(augment_reference(cut_out, rng, Augmentation())) for _ in range(4)]
    for out in outputs:
        assert out.ndim == 3 and out.shape[2] == 3
        center = out[out.shape[0] // 2, out.shape[1] // 2]
        assert np.abs(center.astype(int) - (200, 30, 30)).max() < 30  # the subject survives
    corners = {tuple(out[0, 0]) for out in outputs}
    assert len(corners) > 1  # backgrounds differ from draw to draw
    plain = np.asarray(augment_reference(cut_out, rng, Augmentation(enabled=False)))
    assert tuple(plain[0, 0]) == (255, 255, 255)


@pytest.mark.slow
def test_workers_read_disjoint_draws_and_resume_mid_epoch(tmp_path: Path, encoders) -> None:
    """Two DataLoader workers: one shared resampled stream dealt out, replayed from a position exactly."""
    root = write_shard_set(tmp_path / "set", range(8), max_samples=1)
    keys = {make_triple(i).key for i in range(8)}

    def run(position: tuple[int, int] | None = None) -> list[tuple[list[str], torch.Tensor]]:
        loader = loader_for([root], tmp_path, encoders, 16, num_workers=2, shuffle_buffer=0)
        if position:
            loader.dataset.set_position(*position)
        return [(b["keys"], b["reference_pixels"]) for b in loader]

    first = run()
    assert len(first) == 8  # 16 samples per epoch, batches of 2, 4 per worker
    assert {key for batch_keys, _ in first for key in batch_keys} <= keys
    resumed = run((0, 3))
    assert [k for k, _ in resumed] == [k for k, _ in first[3:]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, first[3:], strict=True))
    next_epoch = run((1, 0))
    assert [k for k, _ in next_epoch] != [k for k, _ in first]  # a new epoch draws a new stream
