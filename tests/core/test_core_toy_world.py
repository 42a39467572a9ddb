"""The toy world's renderer, captions and fixed split (cafe_core.toy): exact masks, determinism, the grammar."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from cafe_core.toy import (
    BACKGROUND_NAMES,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    SPLIT,
    Scene,
    Subject,
    ToySplit,
    all_scenes,
    all_subjects,
    caption,
    held_out_scene_pairs,
    held_out_subjects,
    in_training,
    is_held_out,
    parse_caption,
    parse_scene,
    render,
    scene_prompt,
    train_subjects,
)
from cafe_core.toy.render import shade_rgb
from cafe_core.toy.world import background, hue

STAR = Subject("star", "red", "striped")


def _outside_subject(rendering) -> np.ndarray:
    """Background pixels: not the mask and not its outline (the mask grown by 2 px, to be safe)."""
    grown = rendering.mask.copy()
    for _ in range(2):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return ~grown


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_texture():
    for name in BACKGROUND_NAMES:
        scene = Scene(name, "centre", "medium")
        first, again = render(STAR, scene, seed=7), render(STAR, scene, seed=7)
        assert first.image.tobytes() == again.image.tobytes()
        assert first.mask.tobytes() == again.mask.tobytes()
        other = render(STAR, scene, seed=8)
        both = _outside_subject(first) & _outside_subject(other)
        assert (first.image[both] != other.image[both]).any(axis=1).mean() > 0.2, name


def test_every_combination_renders_at_32_and_64_px_with_an_exact_mask_inside_the_image():
    for index, (shape, colour, pattern, name, position) in enumerate(
        itertools.product(SHAPES, COLOUR_NAMES, PATTERNS, BACKGROUND_NAMES, POSITIONS)
    ):
        subject = Subject(shape, colour, pattern)
        scene = Scene(name, position, SIZE_NAMES[index % len(SIZE_NAMES)])
        rgb = np.array(hue(colour).rgb, np.uint8)
        for size_px in (32, 64):
            got = render(subject, scene, size_px=size_px, seed=index)
            assert got.image.shape == (size_px, size_px, 3) and got.image.dtype == np.uint8
            assert got.mask.shape == (size_px, size_px) and got.mask.dtype == bool
            # Inside the image with room for the outline: the two outer rings of pixels are never subject.
            assert got.mask.any() and not got.mask[:2].any() and not got.mask[-2:].any()
            assert not got.mask[:, :2].any() and not got.mask[:, -2:].any()
            x0, y0, x1, y1 = got.box_xyxy
            assert got.mask[y0:y1, x0:x1].sum() == got.mask.sum()
            assert got.mask[y0].any() and got.mask[y1 - 1].any() and got.mask[:, x0].any() and got.mask[:, x1 - 1].any()
            pixels = got.image[got.mask]
            is_colour = (pixels == rgb).all(axis=1)
            if pattern == "solid":
                assert is_colour.all(), (subject, scene, size_px)
            else:
                is_shade = (pixels == np.array(shade_rgb(hue(colour).rgb), np.uint8)).all(axis=1)
                assert (is_colour | is_shade).all() and is_shade.any(), (subject, scene, size_px)
                assert is_colour.mean() >= 0.4, (subject, scene, size_px)
            assert got.caption == caption(subject, scene)


def test_the_outline_surrounds_the_mask_in_the_backgrounds_outline_colour():
    for name in BACKGROUND_NAMES:
        got = render(Subject("ring", "green", "solid"), Scene(name, "left", "large"), size_px=64, seed=3)
        ring = np.zeros_like(got.mask)
        ring[1:, :] |= got.mask[:-1, :]
        ring[:-1, :] |= got.mask[1:, :]
        ring[:, 1:] |= got.mask[:, :-1]
        ring[:, :-1] |= got.mask[:, 1:]
        ring &= ~got.mask
        assert (got.image[ring] == np.array(background(name).outline_rgb, np.uint8)).all()


def test_position_moves_the_subject_across_and_size_scales_it():
    centres = []
    for position in POSITIONS:
        got = render(STAR, Scene("sand", position, "large"), seed=1)
        centres.append(np.flatnonzero(got.mask.any(axis=0)).mean())
    assert centres[0] + 3 < centres[1] < centres[2] - 3
    areas = [render(STAR, Scene("sand", "centre", name), seed=1).mask.sum() for name in SIZE_NAMES]
    assert areas[0] < areas[1] < areas[2]


def test_the_rendering_cannot_be_changed_in_place():
    got = render(STAR, Scene("snow", "right", "small"), seed=0)
    with pytest.raises(ValueError):
        got.image[0, 0] = 0
    with pytest.raises(ValueError):
        got.mask[0, 0] = True


def test_bad_arguments_fail_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"hexagon.*circle, square"):
        Subject("hexagon", "red", "solid")
    with pytest.raises(ValueError, match=r"'teal'.*red, orange"):
        Subject("star", "teal", "solid")
    with pytest.raises(ValueError, match=r"'moon'.*grass, sand"):
        Scene("moon", "left", "small")
    with pytest.raises(ValueError, match="size_px 16 must be an int from 24"):
        render(STAR, Scene("sand", "left", "small"), size_px=16, seed=0)
    with pytest.raises(ValueError, match="seed -1 must be an int >= 0"):
        render(STAR, Scene("sand", "left", "small"), seed=-1)


def test_colours_are_far_apart_and_only_the_documented_pairs_are_near_a_background():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8 and PATTERNS == ("solid", "striped", "dotted")
    assert len(BACKGROUNDS) >= 6 and POSITIONS == ("left", "centre", "right")
    assert min(np.linalg.norm(np.subtract(a.rgb, b.rgb)) for a, b in itertools.combinations(COLOURS, 2)) >= 90
    near = {(c.name, b.name) for c in COLOURS for b in BACKGROUNDS if np.linalg.norm(np.subtract(c.rgb, b.rgb)) < 100}
    assert near == {("green", "grass"), ("blue", "water"), ("red", "brick_wall")}


def test_backgrounds_are_distinct_colours_with_a_texture():
    means = {}
    for name in BACKGROUND_NAMES:
        got = render(STAR, Scene(name, "left", "small"), seed=5)
        pixels = got.image[_outside_subject(got)].astype(np.float64)
        assert pixels.std(axis=0).max() > 4, f"{name} has no texture"
        means[name] = pixels.mean(axis=0)
    assert min(np.linalg.norm(means[a] - means[b]) for a, b in itertools.combinations(means, 2)) > 50


def test_the_caption_names_everything_and_parse_caption_inverts_it_for_every_combination():
    assert caption(STAR, Scene("sand", "left", "small")) == "a small red striped star on the sand, at the left"
    assert caption(Subject("ring", "blue", "solid"), Scene("night_sky", "centre", "large")) == (
        "a large blue solid ring under the night sky, at the centre"
    )
    for subject in all_subjects():
        for scene in all_scenes():
            text = caption(subject, scene)
            assert parse_caption(text) == (subject, scene)
            words = text.replace(",", "").split(" ")
            assert {subject.shape, subject.colour, subject.pattern, scene.position, scene.size} <= set(words)
            assert background(scene.background).phrase in text


@pytest.mark.parametrize(
    "text",
    [
        "a small red striped star on the sand, at the left.",
        "A small red striped star on the sand, at the left",
        "a small red  striped star on the sand, at the left",
        "a small striped red star on the sand, at the left",
        "a tiny red striped star on the sand, at the left",
        "a small red striped star on the moon, at the left",
    ],
)
def test_parse_caption_refuses_text_off_the_grammar(text):
    with pytest.raises(ValueError, match="does not follow the grammar"):
        parse_caption(text)


def test_scene_prompts_name_the_subject_by_a_word_and_parse_scene_reads_every_scene_back():
    assert scene_prompt(Scene("sand", "left", "small")) == "a small object on the sand, at the left"
    for scene in all_scenes():
        assert parse_scene(scene_prompt(scene)) == ("object", scene)
        assert parse_scene(scene_prompt(scene, "sks object")) == ("sks object", scene)
        assert parse_scene(caption(STAR, scene)) == ("red striped star", scene)
    for bad in ("", " object", "sks  object"):
        with pytest.raises(ValueError, match="subject_words"):
            scene_prompt(Scene("sand", "left", "small"), bad)


@pytest.mark.parametrize(
    "text",
    ["a small on the sand, at the left", "a small object on the moon, at the left", "an object on the sand"],
)
def test_parse_scene_refuses_text_off_the_scene_grammar_and_shows_an_example(text):
    with pytest.raises(ValueError, match="a small object on the sand, at the left"):
        parse_scene(text)


def test_the_split_is_fixed():
    held = held_out_subjects()
    assert len(held) == 28 and len(train_subjects()) == 116
    assert held[:6] == (
        Subject("circle", "red", "solid"),
        Subject("circle", "green", "dotted"),
        Subject("circle", "cyan", "striped"),
        Subject("circle", "blue", "solid"),
        Subject("square", "yellow", "dotted"),
        Subject("square", "green", "striped"),
    )
    assert Subject("cross", "pink", "dotted") not in held  # indices 5 + 7 + 2 = 14: off the diagonal
    assert is_held_out(Subject("star", "pink", "solid")) and not is_held_out(STAR)
    assert ToySplit.fixed() == SPLIT
    assert set(train_subjects()) | set(held) == set(all_subjects())
    assert 0.15 <= len(held) / len(all_subjects()) <= 0.25


def test_training_keeps_every_attribute_and_every_pair_of_attributes():
    train = train_subjects()
    assert {s.shape for s in train} == set(SHAPES)
    assert {s.colour for s in train} == set(COLOUR_NAMES)
    assert {s.pattern for s in train} == set(PATTERNS)
    for pick in ((0, 1), (0, 2), (1, 2)):
        pairs = {tuple((s.shape, s.colour, s.pattern)[i] for i in pick) for s in train}
        wanted = {tuple((s.shape, s.colour, s.pattern)[i] for i in pick) for s in all_subjects()}
        assert pairs == wanted


def test_held_out_scene_pairs_are_training_subjects_kept_off_one_background():
    pairs = held_out_scene_pairs()
    assert len(pairs) >= 3 and {name for name, _ in pairs} <= set(BACKGROUND_NAMES)
    for name, subject in pairs:
        assert subject in train_subjects() and not is_held_out(subject)
        assert not in_training(subject, name)
        assert all(in_training(subject, other) for other in BACKGROUND_NAMES if other != name)
    assert not any(in_training(s, name) for s in held_out_subjects() for name in BACKGROUND_NAMES)
    with pytest.raises(ValueError, match="must name a background and a training subject"):
        ToySplit(SPLIT.train_subjects, SPLIT.held_out_subjects, (("grass", held_out_subjects()[0]),))


def test_the_toy_world_imports_no_torch_and_its_split_ignores_the_hash_seed():
    code = (
        "import cafe_core.toy, sys\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'cafe_core.toy loaded torch or ray'\n"
        "print(' '.join(s.phrase.replace(' ', '_') for s in cafe_core.toy.held_out_subjects()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert done.stdout.split() == [s.phrase.replace(" ", "_") for s in held_out_subjects()]
