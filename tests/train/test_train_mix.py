"""The training mix: `TrainConfig.shard_weights` draws each shard set in proportion to its weight."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
from factories import make_triple
from train_helpers import write_shard_set

from cafe_core import resolve_shards
from cafe_model.load import load_model
from cafe_train import TrainConfig
from cafe_train.config_io import load_train_config
from cafe_train.loader import EpochResampledShards, _seed, build_loader, shard_draw_weights

REAL = range(8)  # 2 shards of 4 samples
GENERATED = range(100, 106)  # 6 shards of 1 sample: a naive "pick a set, then a shard" would under-draw it


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mix")
    return (
        write_shard_set(root / "real", REAL, max_samples=4),
        write_shard_set(root / "generated", GENERATED, max_samples=1),
    )


@pytest.fixture(scope="module")
def encoders(model_cache: Path):
    model = load_model("tiny", cache_dir=model_cache)
    return model.tokenizer, model.reference_encoder.image_processor


def mix_config(sets: tuple[Path, Path], tmp_path: Path, weights: list[float] | None, **overrides) -> TrainConfig:
    options = {"batch_size": 4, "resolution_px": 32, "num_workers": 0, "shuffle_buffer": 8, **overrides}
    return TrainConfig(shards=list(sets), output_dir=tmp_path / "run", preset="tiny", shard_weights=weights, **options)


@pytest.mark.parametrize(
    ("weights", "says"),
    [
        ([1.0], "1 weight(s) for 2 shard set(s)"),
        ([1.0, 2.0, 3.0], "3 weight(s) for 2 shard set(s)"),
        ([1.0, -1.0], "finite number >= 0"),
        ([1.0, float("inf")], "finite number >= 0"),
        ([True, 1.0], "finite number >= 0"),
        (["3", 1.0], "finite number >= 0"),
        ([0, 0], "must not all be 0"),
        ("3:1", "list of numbers"),
    ],
)
def test_bad_weights_are_refused_naming_the_field(two_sets, tmp_path: Path, weights, says: str) -> None:
    with pytest.raises(ValueError, match="shard_weights") as error:
        mix_config(two_sets, tmp_path, weights)
    assert says in str(error.value)


def test_weights_from_yaml_and_set_overrides(two_sets, tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text("preset: tiny\nshard_weights: [3, 1]\n")
    config = load_train_config(recipe, shards=list(two_sets), output_dir=tmp_path / "run")
    assert config.shard_weights == [3.0, 1.0] and all(isinstance(w, float) for w in config.shard_weights)
    config = load_train_config(recipe, shards=list(two_sets), output_dir=tmp_path / "run", sets=["shard_weights=null"])
    assert config.shard_weights is None


def test_shard_weights_follow_sample_counts(two_sets) -> None:
    urls, weights = shard_draw_weights(two_sets, [3.0, 1.0])
    assert urls == resolve_shards(list(two_sets))
    assert weights == [3.0 / 8] * 2 + [1.0 / 6] * 6
    # Expected samples per draw from each set, over the sum: the weights' shares.
    share_real = sum(w * 4 for w in weights[:2]) / (sum(w * 4 for w in weights[:2]) + sum(weights[2:]))
    assert share_real == pytest.approx(0.75)


def test_weighted_stream_is_seeded_and_proportional(two_sets) -> None:
    urls, weights = shard_draw_weights(two_sets, [3.0, 1.0])
    urls = [str(u) for u in urls]
    stream = EpochResampledShards(urls, seed=5, weights=weights)
    draws = [d["url"] for d in itertools.islice(stream, 20_000)]
    assert draws == [d["url"] for d in itertools.islice(EpochResampledShards(urls, 5, weights), 20_000)]
    assert draws != [d["url"] for d in itertools.islice(EpochResampledShards(urls, 6, weights), 20_000)]
    counts = Counter(draws)
    real_samples = 4 * sum(counts[u] for u in urls[:2])
    assert real_samples / (real_samples + sum(counts[u] for u in urls[2:])) == pytest.approx(0.75, abs=0.02)


def test_unweighted_stream_is_the_stream_drawn_before_weights_existed(two_sets) -> None:
    urls = [str(u) for u in resolve_shards(list(two_sets))]
    rng = random.Random(_seed(0, 0, 0x5A4D))
    old = [rng.choice(urls) for _ in range(50)]
    assert [d["url"] for d in itertools.islice(EpochResampledShards(urls, 0), 50)] == old


def test_a_zero_weight_set_is_never_drawn(two_sets, tmp_path: Path, encoders) -> None:
    tokenizer, processor = encoders
    config = mix_config(two_sets, tmp_path, [0.0, 1.0], epoch_samples=40)
    loader = build_loader(config, tokenizer=tokenizer, reference_processor=processor, num_samples=14)
    seen = {key for batch in loader for key in batch["keys"]}
    assert seen == {make_triple(i).key for i in GENERATED}


def test_loader_draws_the_sets_in_proportion_and_replays(two_sets, tmp_path: Path, encoders) -> None:
    tokenizer, processor = encoders
    real_keys = {make_triple(i).key for i in REAL}

    def keys(weights: list[float] | None, position: tuple[int, int] | None = None) -> list[str]:
        config = mix_config(two_sets, tmp_path, weights, epoch_samples=400)
        loader = build_loader(config, tokenizer=tokenizer, reference_processor=processor, num_samples=14)
        if position:
            loader.dataset.set_position(*position)
        return [key for batch in loader for key in batch["keys"]]

    mixed = keys([3.0, 1.0])
    assert len(mixed) == 400
    assert sum(key in real_keys for key in mixed) / len(mixed) == pytest.approx(0.75, abs=0.08)
    assert keys([3.0, 1.0]) == mixed  # same seed, same stream
    assert keys([3.0, 1.0], (0, 10)) == mixed[40:]  # resume 10 batches in: the rest of the same epoch
    inverted = keys([1.0, 3.0])
    assert sum(key in real_keys for key in inverted) / len(inverted) == pytest.approx(0.25, abs=0.08)
