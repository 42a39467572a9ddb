"""The round's parts without models or Ray: the quality filter, the duplicate checks, the prompt bank, the
config, and reading the input sets."""

from __future__ import annotations

import numpy as np
import pytest
from improve_helpers import write_input_set

from cafe_core.flags import add_flag
from cafe_core.toy import (
    SUBJECT_WORD,
    all_scenes,
    caption,
    held_out_scene_pairs,
    in_training,
    parse_scene,
    scene_prompt,
)
from cafe_pipelines.dedupe import DedupeConfig, DedupeIndex
from cafe_pipelines.filtering import FilterConfig, filter_candidates
from cafe_pipelines.improve_config import apply_overrides, improve_recipe
from cafe_pipelines.prompt_bank import (
    LIVE_PROMPTS,
    OBJECT_PROMPTS,
    REWRITE_SCENES,
    is_live_subject,
    pick_prompts,
    prompt_bank,
    rewrite_caption,
    toy_bank,
)
from cafe_pipelines.round_inputs import read_round_inputs


def scores(dino=0.8, clip_i=0.8, clip_t=30.0, copy_paste=0.1, num_instances=1.0, subject_found=1.0) -> dict:
    return {
        "dino": dino,
        "clip_i": clip_i,
        "clip_t": clip_t,
        "copy_paste": copy_paste,
        "num_instances": num_instances,
        "subject_found": subject_found,
    }


ABSOLUTE = FilterConfig(min_dino=0.5, min_clip_i=0.7, min_clip_t=25.0, max_copy_paste=0.9, exactly_one_instance=True)


def test_absolute_filter_keeps_exactly_the_candidates_above_every_threshold() -> None:
    rng = np.random.default_rng(0)
    candidates = [
        scores(
            dino=float(rng.uniform(0, 1)),
            clip_i=float(rng.uniform(0.4, 1)),
            clip_t=float(rng.uniform(10, 40)),
            copy_paste=float(rng.uniform(0, 1)),
        )
        for _ in range(200)
    ]
    verdicts = filter_candidates(candidates, ["dog"] * len(candidates), ABSOLUTE)
    expected = [
        c["dino"] >= 0.5 and c["clip_i"] >= 0.7 and c["clip_t"] >= 25.0 and c["copy_paste"] <= 0.9 for c in candidates
    ]
    assert [v.accepted for v in verdicts] == expected
    assert 0 < sum(expected) < len(expected)
    for verdict in verdicts:
        if verdict.accepted:
            assert verdict.passed == ("subject_found", "instances", "copy_paste", "dino", "clip_i", "clip_t")


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (scores(subject_found=0.0, dino=0.0), "filter.not_found"),
        (scores(num_instances=2.0), "filter.instances"),
        (scores(num_instances=0.0), "filter.instances"),
        (scores(copy_paste=0.95), "filter.copy_paste"),
        (scores(dino=0.49), "filter.dino"),
        (scores(clip_i=0.69), "filter.clip_i"),
        (scores(clip_t=24.9), "filter.clip_t"),
        (scores(dino=float("nan")), "filter.dino"),
        # the first failed check names the reason
        (scores(num_instances=3.0, dino=0.1, copy_paste=0.99), "filter.instances"),
        (scores(dino=0.1, clip_t=1.0), "filter.dino"),
    ],
)
def test_each_check_rejects_with_its_reason(candidate: dict, reason: str) -> None:
    (verdict,) = filter_candidates([candidate], ["dog"], ABSOLUTE)
    assert (verdict.accepted, verdict.reason) == (False, reason)
    assert verdict.detail


def test_thresholds_set_to_none_are_not_checked() -> None:
    off = FilterConfig(min_dino=None, min_clip_i=None, min_clip_t=None, max_copy_paste=None, exactly_one_instance=False)
    (verdict,) = filter_candidates(
        [scores(dino=-1.0, clip_i=-1.0, clip_t=0.0, copy_paste=1.0, num_instances=9)], ["dog"], off
    )
    assert verdict.accepted and verdict.passed == ("subject_found",)
    (not_found,) = filter_candidates([scores(subject_found=0.0)], ["dog"], off)
    assert not_found.reason == "filter.not_found"  # never off


# Every check off but the class's median DINO (and subject_found, which is never off).
DINO_MEDIAN_ONLY = FilterConfig(
    min_dino=None,
    min_clip_i=None,
    min_clip_t=None,
    dino_percentile=50.0,
    max_copy_paste=None,
    exactly_one_instance=False,
)


def test_percentile_floors_are_per_class() -> None:
    config = DINO_MEDIAN_ONLY
    dog = [0.1, 0.2, 0.3, 0.4]  # median 0.25
    mug = [0.6, 0.7, 0.8, 0.9, 1.0]  # median 0.8
    candidates = [scores(dino=v) for v in dog + mug]
    classes = ["dog"] * len(dog) + ["mug"] * len(mug)
    verdicts = filter_candidates(candidates, classes, config)
    kept = [c["dino"] for c, v in zip(candidates, verdicts, strict=True) if v.accepted]
    assert kept == [0.3, 0.4, 0.8, 0.9, 1.0]
    assert all(v.reason == "filter.dino" and "percentile" in v.detail for v in verdicts if not v.accepted)


def test_percentile_ignores_candidates_whose_subject_was_not_found() -> None:
    config = DINO_MEDIAN_ONLY
    candidates = [scores(dino=0.0, subject_found=0.0)] * 5 + [scores(dino=v) for v in (0.2, 0.4, 0.6)]
    verdicts = filter_candidates(candidates, ["dog"] * len(candidates), config)
    assert [v.reason for v in verdicts[:5]] == ["filter.not_found"] * 5
    assert [v.accepted for v in verdicts[5:]] == [False, True, True]  # median of the found: 0.4


def test_absolute_and_percentile_floors_both_apply() -> None:
    config = FilterConfig(
        min_dino=0.35,
        min_clip_i=None,
        min_clip_t=None,
        dino_percentile=25.0,
        max_copy_paste=None,
        exactly_one_instance=False,
    )
    candidates = [scores(dino=v) for v in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert [v.accepted for v in filter_candidates(candidates, ["dog"] * 5, config)] == [False, False, False, True, True]


@pytest.mark.parametrize(
    "bad",
    [{"dino_percentile": 101.0}, {"min_dino": 2.0}, {"min_clip_t": -1.0}, {"max_copy_paste": 1.5}],
)
def test_filter_config_refuses_out_of_range_values(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        FilterConfig(**bad)


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_dedupe_by_sha256_against_inputs_and_within_the_round() -> None:
    index = DedupeIndex(DedupeConfig(max_cosine=None), known_sha256={"a" * 64: "in:00"})
    assert index.check("a" * 64, None) == ("dedupe.sha256", "same target bytes as in:00")
    assert index.check("b" * 64, None) is None
    index.add("k1", "b" * 64, None)
    reason, detail = index.check("b" * 64, None)
    assert reason == "dedupe.sha256" and "k1" in detail
    off = DedupeIndex(DedupeConfig(sha256=False, max_cosine=None), known_sha256={"a" * 64: "in:00"})
    assert off.check("a" * 64, None) is None


def test_dedupe_by_near_embedding_against_sources_and_within_the_round() -> None:
    index = DedupeIndex(DedupeConfig(max_cosine=0.95), known_embeddings=np.stack([unit(1, 0, 0)]), known_names=["src"])
    reason, detail = index.check("c" * 64, unit(1, 0.1, 0))  # cosine 0.995
    assert reason == "dedupe.near" and "src" in detail
    assert index.check("c" * 64, unit(0, 1, 0)) is None  # orthogonal
    index.add("k2", "c" * 64, unit(0, 1, 0))
    reason, detail = index.check("d" * 64, unit(0.05, 1, 0))
    assert reason == "dedupe.near" and "k2" in detail
    assert index.check("d" * 64, unit(0.6, 0.8, 0)) is None  # cosine 0.8 with both
    index.add_known("another source", unit(0, 0, 1))
    assert index.check("e" * 64, unit(0, 0.1, 1))[0] == "dedupe.near"
    off = DedupeIndex(DedupeConfig(max_cosine=None), known_embeddings=np.stack([unit(1, 0, 0)]))
    assert off.check("c" * 64, unit(1, 0, 0)) is None


def test_live_subjects_get_the_live_prompts() -> None:
    assert is_live_subject("brown dog") and is_live_subject("a small cat") and is_live_subject("woman")
    assert not is_live_subject("red cube") and not is_live_subject("teddy bear") and not is_live_subject("")
    assert len(OBJECT_PROMPTS) == len(LIVE_PROMPTS) == 25
    dog = prompt_bank("brown dog", "a brown dog on a couch")
    cube = prompt_bank("red cube", "a red cube on a table")
    assert "a brown dog wearing a santa hat" in dog and "a brown dog floating on top of water" not in dog
    assert "a red cube floating on top of water" in cube and "a red cube wearing a santa hat" not in cube
    assert len(dog) == len(cube) == 25 + len(REWRITE_SCENES)
    assert all("brown dog" in p for p in dog) and all("red cube" in p for p in cube)


def test_toy_captions_get_the_toy_scenes_without_the_subjects_held_out_pairs() -> None:
    (background, subject), *_ = held_out_scene_pairs()
    scene = next(s for s in all_scenes() if s.background != background)
    bank = prompt_bank(SUBJECT_WORD, caption(subject, scene))
    allowed = [s for s in all_scenes() if in_training(subject, s.background)]
    assert bank == [scene_prompt(s) for s in allowed] and len(allowed) < len(all_scenes())
    assert all(parse_scene(prompt)[1].background != background for prompt in bank)
    # A round's sample is captioned with its prompt, which no longer names the subject: every scene.
    assert prompt_bank(SUBJECT_WORD, scene_prompt(scene)) == [scene_prompt(s) for s in all_scenes()]
    assert toy_bank("a red cube on a table") is None  # not the toy grammar: DreamBench's bank
    config = improve_recipe("toy", checkpoint="run", shards=["in"], output="out")
    assert config.filter.min_dino == 1.0 and config.filter.min_clip_t == 100.0 and config.filter.max_copy_paste is None


def test_caption_rewrites_swap_the_scene() -> None:
    assert rewrite_caption("a red cube on a noisy table", "red cube", "in the snow") == "a red cube in the snow"
    assert rewrite_caption("A  Brown dog sitting on a couch", "brown dog", "on a beach") == "A Brown dog on a beach"
    assert rewrite_caption("something else entirely", "mug", "on a desk") == "a photo of the mug on a desk"


def test_picked_prompts_are_distinct_and_deterministic() -> None:
    picked = pick_prompts("red cube", "a red cube on a table", 5, seed=0, reference_key="0" * 16)
    assert picked == pick_prompts("red cube", "a red cube on a table", 5, seed=0, reference_key="0" * 16)
    assert len({i for i, _ in picked}) == 5 and [i for i, _ in picked] == sorted(i for i, _ in picked)
    bank = prompt_bank("red cube", "a red cube on a table")
    assert all(bank[i] == prompt for i, prompt in picked)
    others = [pick_prompts("red cube", "a red cube on a table", 5, seed=s, reference_key="0" * 16) for s in (1, 2)]
    assert any(o != picked for o in others)
    assert len(pick_prompts("red cube", "", 1000, seed=0, reference_key="1" * 16)) == len(bank)


def test_config_refuses_an_output_that_is_an_input(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    for output in (tmp_path / "in", tmp_path / "in" / "round-1", tmp_path):
        with pytest.raises(ValueError, match="output"):
            improve_recipe("tiny", checkpoint="run", shards=[str(tmp_path / "in")], output=str(output))
    config = improve_recipe("tiny", checkpoint="run", shards=[str(tmp_path / "in")], output=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="input set"):
        apply_overrides(config, {"output": str(tmp_path / "in")})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"preset": "huge"}, "scorer preset"),
        ({"mode": "extend"}, "incremental or overwrite"),
        ({"candidates_per_pair": 0}, "candidates_per_pair"),
        ({"size_px": 60}, "size_px"),
        ({"filter": {"min_dino": 3}}, "min_dino"),
        ({"filter": {"no_such": 1}}, "no_such"),
        ({"dedupe": {"max_cosine": 2}}, "max_cosine"),
        ({"resources": {"generate": {"num_gpus": -1}}}, "num_gpus"),
    ],
)
def test_config_names_a_bad_setting(tmp_path, override: dict, message: str) -> None:
    config = improve_recipe("tiny", checkpoint="run", shards=[str(tmp_path / "in")], output=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=message):
        apply_overrides(config, override)


def test_recipes() -> None:
    tiny = improve_recipe("tiny", checkpoint="run", shards=["in"], output="out", seed=3)
    assert tiny.seed == 3 and tiny.shards == ("in",)
    assert tiny.filter.dino_percentile is not None and tiny.filter.min_dino is None
    base = improve_recipe("base", checkpoint="run", shards=("in",), output="out")
    assert base.filter.min_dino is not None and base.filter.exactly_one_instance


def test_reading_inputs_picks_by_seed_leaves_out_flags_and_refuses_open_sets(tmp_path) -> None:
    root = write_input_set(tmp_path / "real", 6)
    everything = read_round_inputs([str(root)], num_references=None, seed=0)
    assert len(everything.references) == 6 and everything.round == 0 and len(everything.target_sha256) == 6
    assert [r.key for r in everything.references] == sorted(r.key for r in everything.references)
    assert {r.subject for r in everything.references} == {"red cube", "brown dog"}
    picks = [{r.key for r in read_round_inputs([str(root)], num_references=3, seed=s).references} for s in range(4)]
    assert all(len(p) == 3 for p in picks) and len({frozenset(p) for p in picks}) > 1
    assert picks[0] == {r.key for r in read_round_inputs([str(root)], num_references=3, seed=0).references}
    flagged = sorted(picks[0])[0]
    add_flag(root, flagged, "looks wrong")
    after = read_round_inputs([str(root)], num_references=None, seed=0)
    assert flagged not in {r.key for r in after.references} and len(after.references) == 5
    assert len(after.target_sha256) == 6  # a flagged target still counts as a duplicate
    (root / "dataset.json").unlink()
    with pytest.raises(ValueError, match="not a closed shard set"):
        read_round_inputs([str(root)], num_references=None, seed=0)
