"""The `toy` scorer preset on the real renderer and the real toy classifier (trained once, into this
session's model cache): accuracy on fresh renderings, chance on noise, the `Scorers` interface."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cafe_core.toy import (
    COLOUR_NAMES,
    PATTERNS,
    SHAPES,
    Rendering,
    Scene,
    Subject,
    all_scenes,
    all_subjects,
    held_out_subjects,
    render,
    scene_prompt,
)
from cafe_vision.compose import DEFAULT_MARGIN, compose_reference
from cafe_vision.load_scorers import load_scorers
from cafe_vision.model_cache import recipe_hash
from cafe_vision.scorer_presets import SCORER_PRESET_NAMES, SCORER_PRESETS, TOY, get_scorer_preset
from cafe_vision.scorers import SCORE_NAMES, Scorers
from cafe_vision.toy_classifier import HEADS, IDENTITY_HEADS, TOY_CLASSIFIER, TRAINING_SEED_LIMIT
from cafe_vision.toy_scorers import MIN_INSTANCE_PX, ToyReading, ToyScorers, instances

# Seeds the classifier never trained on (its pool's lie below TRAINING_SEED_LIMIT).
FRESH = TRAINING_SEED_LIMIT + 1_000_003
MIN_ACCURACY = 0.98


@pytest.fixture(scope="module")
def toy_scorers(model_cache: Path) -> ToyScorers:
    return ToyScorers("toy", cache_dir=model_cache)


def image_of(rendering: Rendering) -> Image.Image:
    return Image.fromarray(np.asarray(rendering.image), "RGB")


def cut_out(rendering: Rendering) -> Image.Image:
    """The subject as a sample's reference.png holds it: RGBA, alpha = mask, framed with the data engine's margin."""
    return compose_reference(image_of(rendering), np.asarray(rendering.mask), rendering.box_xyxy, DEFAULT_MARGIN)


def attribute(drawn: Rendering | ToyReading, head: str) -> str:
    """The value of one head's attribute (shape, ..., size) of a rendering or of what the classifier read."""
    return getattr(drawn.subject if head in IDENTITY_HEADS else drawn.scene, head)


def fresh_renderings(count_per_subject: int, seed: int) -> list[Rendering]:
    """Every subject (held-out ones too) in `count_per_subject` random scenes, at seeds never trained on."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    drawn = []
    for index, subject in enumerate(all_subjects()):
        for k in range(count_per_subject):
            scene = scenes[rng.integers(len(scenes))]
            drawn.append(render(subject, scene, seed=FRESH + seed * 100_000 + index * 10 + k))
    return drawn


# Fast: the preset, the factory's routing, the spec's checks and the instance count, without the classifier.


def test_the_toy_preset_is_known_and_the_others_are_unchanged() -> None:
    assert get_scorer_preset("toy") is TOY
    assert SCORER_PRESET_NAMES == ("tiny", "base", "toy")
    assert set(SCORER_PRESETS) == {"tiny", "base"}  # the presets `Scorers` builds
    assert TOY.is_random is False
    assert TOY.model_records() == {
        "classifier": {"name": "cafe-toy/toy-classifier", "revision": recipe_hash(TOY_CLASSIFIER.recipe())}
    }
    with pytest.raises(ValueError, match=r"'huge'.*tiny, base, toy"):
        get_scorer_preset("huge")


def test_the_recipe_holds_the_version_the_settings_and_torch() -> None:
    import torch

    recipe = TOY_CLASSIFIER.recipe()
    assert recipe["version"] >= 1 and recipe["torch"] == torch.__version__
    assert recipe["steps"] == TOY_CLASSIFIER.steps and recipe["seed"] == TOY_CLASSIFIER.seed
    assert recipe_hash(dataclasses.replace(TOY_CLASSIFIER, seed=1).recipe()) != recipe_hash(recipe)


def test_a_bad_spec_or_a_wrong_preset_fails_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="steps=0 must be an int >= 1"):
        dataclasses.replace(TOY_CLASSIFIER, steps=0)
    with pytest.raises(ValueError, match="sum to under 1"):
        dataclasses.replace(TOY_CLASSIFIER, reference_fraction=0.9, empty_fraction=0.1)
    # Both refused before any model is loaded.
    with pytest.raises(ValueError, match=r"not a toy preset; use cafe_vision\.scorers\.Scorers"):
        ToyScorers("tiny")
    with pytest.raises(ValueError, match="float32"):
        ToyScorers("toy", dtype="float16")
    with pytest.raises(ValueError, match="unknown scorer preset 'huge'"):
        load_scorers("huge")
    with pytest.raises(ValueError, match=r"'toy' is implemented by .*ToyScorers; load it with .*load_scorers\('toy'\)"):
        Scorers("toy")


def test_instances_count_parts_big_enough_and_keep_the_largest() -> None:
    mask = np.zeros((32, 32), dtype=bool)
    assert instances(mask) == (0, None)
    mask[2:4, 2:4] = True  # a speck below MIN_INSTANCE_PX
    assert instances(mask)[0] == 0
    mask[10:20, 10:20] = True
    mask[25:30, 25:30] = True  # 25 px: a second object
    count, main = instances(mask)
    assert count == 2 and main is not None and main.sum() == 100 and main[15, 15]
    diagonal = np.zeros((32, 32), dtype=bool)
    diagonal[np.arange(MIN_INSTANCE_PX), np.arange(MIN_INSTANCE_PX)] = True  # 8-neighbours: one part
    assert instances(diagonal)[0] == 1


# Slow: the classifier is trained once (about 90 s) into the session's cache by the first of these.


@pytest.mark.slow
def test_every_head_reads_fresh_renderings(toy_scorers: ToyScorers) -> None:
    drawn = fresh_renderings(count_per_subject=4, seed=1)
    readings = toy_scorers.read([image_of(r) for r in drawn])
    accuracy = {
        head: float(
            np.mean([attribute(got, head) == attribute(r, head) for got, r in zip(readings, drawn, strict=True)])
        )
        for head in HEADS
    }
    assert min(accuracy.values()) >= MIN_ACCURACY, accuracy
    held_out = set(held_out_subjects())
    held = [reading.subject == r.subject for reading, r in zip(readings, drawn, strict=True) if r.subject in held_out]
    assert len(held) == 4 * len(held_out) and np.mean(held) >= MIN_ACCURACY
    # One object found, where it is.
    assert np.mean([reading.num_instances == 1 for reading in readings]) >= MIN_ACCURACY
    ious = [
        (reading.mask & r.mask).sum() / (reading.mask | r.mask).sum() if reading.mask is not None else 0.0
        for reading, r in zip(readings, drawn, strict=True)
    ]
    assert np.mean(ious) >= 0.8, np.mean(ious)


@pytest.mark.slow
def test_a_reference_and_another_rendering_of_its_subject_agree(toy_scorers: ToyScorers) -> None:
    targets = fresh_renderings(count_per_subject=2, seed=2)
    sources = fresh_renderings(count_per_subject=2, seed=3)  # the same subjects, other scenes and seeds
    references = [cut_out(r) for r in sources]
    prompts = [scene_prompt(r.scene) for r in targets]
    results = toy_scorers(references, [image_of(r) for r in targets], prompts, ["object"] * len(targets))
    scores = {name: np.array([r.scores[name] for r in results]) for name in SCORE_NAMES}
    assert set(results[0].scores) == set(SCORE_NAMES)
    assert np.mean(scores["dino"] == 1.0) >= MIN_ACCURACY, np.mean(scores["dino"] == 1.0)
    np.testing.assert_allclose(scores["clip_i"], scores["dino"], atol=1e-6)  # the same information
    assert np.mean(scores["clip_t"] == 100.0) >= MIN_ACCURACY, np.mean(scores["clip_t"] == 100.0)
    assert np.mean(scores["subject_found"] == 1.0) >= MIN_ACCURACY
    assert np.median(scores["copy_paste"]) < 0.5  # another rendering is no pasted copy
    # The reference cut out of the target itself is its own pixels: a copy.
    [copy] = toy_scorers([cut_out(targets[0])], [image_of(targets[0])], [prompts[0]], ["object"])
    assert copy.scores["copy_paste"] > 0.9


@pytest.mark.slow
def test_noise_reads_near_chance(toy_scorers: ToyScorers) -> None:
    rng = np.random.default_rng(4)
    count = 300
    noise = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB") for _ in range(count)]
    subjects = all_subjects()
    references = [
        cut_out(render(subjects[rng.integers(len(subjects))], Scene("sand", "centre", "large"), seed=FRESH + i))
        for i in range(count)
    ]
    read_noise = toy_scorers.read(noise)
    read_references = toy_scorers.read(references)
    for head, vocabulary in (("shape", SHAPES), ("colour", COLOUR_NAMES), ("pattern", PATTERNS)):
        agreement = np.mean(
            [
                getattr(a.subject, head) == getattr(b.subject, head)
                for a, b in zip(read_noise, read_references, strict=True)
            ]
        )
        assert agreement <= 1 / len(vocabulary) + 0.15, (head, agreement)
    prompts = [scene_prompt(Scene("grass", "left", "small"))] * count
    results = toy_scorers(references, noise, prompts, ["object"] * count)
    found = np.mean([r.scores["subject_found"] for r in results])
    assert found < 0.5, found  # most noise images hold no object
    assert np.mean([r.scores["dino"] for r in results]) <= (1 / 6 + 1 / 8 + 1 / 3) / 3 + 0.15


@pytest.mark.slow
def test_a_prompt_off_the_grammar_raises(toy_scorers: ToyScorers) -> None:
    drawn = render(Subject("star", "red", "striped"), Scene("sand", "left", "small"), seed=FRESH)
    for prompt in ("a photo of an object", "a small object on the beach, at the left"):
        with pytest.raises(ValueError, match="off the toy grammar"):
            toy_scorers([cut_out(drawn)], [image_of(drawn)], [prompt], ["object"])
        with pytest.raises(ValueError, match=r"a \{size\} \{subject words\}"):
            toy_scorers.clip_t([image_of(drawn)], [prompt])


@pytest.mark.slow
def test_the_same_cache_gives_the_same_scores(toy_scorers: ToyScorers, model_cache: Path) -> None:
    again = ToyScorers("toy", cache_dir=model_cache)
    assert again.classifier.folder == toy_scorers.classifier.folder  # loaded, not trained again
    drawn = fresh_renderings(count_per_subject=1, seed=5)[:40]
    args = ([cut_out(r) for r in reversed(drawn)], [image_of(r) for r in drawn], [scene_prompt(r.scene) for r in drawn])
    first = toy_scorers(*args, ["object"] * len(drawn))
    second = again(*args, ["object"] * len(drawn))
    assert [r.scores for r in first] == [r.scores for r in second]
    np.testing.assert_array_equal(np.stack([r.embedding for r in first]), np.stack([r.embedding for r in second]))
    assert isinstance(load_scorers("toy", cache_dir=model_cache), ToyScorers)


@pytest.mark.slow
def test_the_scorers_interface(toy_scorers: ToyScorers) -> None:
    drawn = fresh_renderings(count_per_subject=1, seed=6)[:24]
    images = [image_of(r) for r in drawn]
    references = [cut_out(r) for r in reversed(drawn)]
    prompts = [scene_prompt(r.scene) for r in reversed(drawn)]
    results = toy_scorers(references, images, prompts, ["object"] * len(drawn), batch_size=5)
    embeddings = toy_scorers.embed_images(images)
    assert embeddings.shape == (len(images), toy_scorers.clip.dim)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.stack([r.embedding for r in results]), embeddings, atol=1e-5)
    identities = toy_scorers.dino_embedder(images)
    assert identities.shape == (len(images), 17)
    np.testing.assert_allclose(np.linalg.norm(identities, axis=1), 1.0, atol=1e-6)
    dino = toy_scorers.dino(references, images, ["object"] * len(drawn))
    np.testing.assert_allclose(dino, [r.scores["dino"] for r in results], atol=1e-6)
    np.testing.assert_allclose(toy_scorers.clip_i(references, images), dino, atol=1e-6)
    np.testing.assert_allclose(toy_scorers.clip_t(images, prompts), [r.scores["clip_t"] for r in results])
    np.testing.assert_allclose((identities * toy_scorers.dino_embedder(references)).sum(axis=1), dino, atol=1e-6)
    assert toy_scorers.preset.name == "toy" and toy_scorers.models == TOY.model_records()
    # Other sizes are read at 32 px; masks and boxes come back in the image's own size.
    big = images[0].resize((64, 64), Image.Resampling.NEAREST)
    [small_result] = toy_scorers([references[0]], [images[0]], [prompts[0]], ["object"])
    [big_result] = toy_scorers([references[0]], [big], [prompts[0]], ["object"])
    assert big_result.mask is not None and big_result.mask.shape == (64, 64)
    assert small_result.box_xyxy is not None and big_result.box_xyxy is not None
    assert {k: big_result.scores[k] for k in ("dino", "clip_t")} == {
        k: small_result.scores[k] for k in ("dino", "clip_t")
    }
    assert toy_scorers([], [], [], []) == []
    with pytest.raises(ValueError, match="give one of each per candidate"):
        toy_scorers(references[:2], images[:3], prompts[:3], ["object"] * 3)
