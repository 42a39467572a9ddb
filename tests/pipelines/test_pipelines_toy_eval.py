"""The toy evaluation as an instrument: an oracle generator that draws exactly what it is asked scores 1 where
it should and 0 where it should, a generator that ignores its reference scores what the prompt alone gives,
and a set `cafe data toy` did not write is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cafe_core.toy import Subject, parse_scene, render
from cafe_pipelines.evaluate import read_eval_set
from cafe_pipelines.toy_data import ToyDataConfig, make_toy_data
from cafe_pipelines.toy_eval import CHANCE_IDENTITY, CHANCE_TEXT, read_toy_subjects, toy_evaluate
from cafe_vision.toy_scorers import ToyScorers

SUBJECTS = 6
FIXED = Subject("square", "green", "solid")  # what a reference-blind generator draws


@pytest.fixture(scope="module")
def toy_scorers(model_cache: Path) -> ToyScorers:
    return ToyScorers("toy", cache_dir=model_cache)


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    make_toy_data(ToyDataConfig(output=str(root / "data"), num_subjects=1, images_per_subject=1))
    return root / "data" / "eval"


class Oracle:
    """Draws the subject of the reference it is given (looked up by its pixels) in the prompt's scene;
    with None, or when `blind`, always `FIXED`. What a perfect (or a reference-blind) model would draw."""

    def __init__(self, eval_dir: Path, *, blind: bool = False) -> None:
        subjects = read_toy_subjects(read_eval_set(eval_dir))
        self.by_pixels = {np.asarray(s.reference).tobytes(): s.subject for s in subjects}
        self.blind = blind
        self.calls: list[dict] = []

    def __call__(self, reference, prompt: str, *, batch_size: int, seed: int, **settings) -> list[Image.Image]:
        self.calls.append({"reference": reference, "prompt": prompt, "seed": seed, **settings})
        subject = FIXED if reference is None or self.blind else self.by_pixels[np.asarray(reference).tobytes()]
        _, scene = parse_scene(prompt)
        return [Image.fromarray(render(subject, scene, seed=seed + i).image) for i in range(batch_size)]


@pytest.mark.slow
def test_an_oracle_scores_one_and_follows_whatever_reference_it_is_given(eval_dir: Path, toy_scorers) -> None:
    oracle = Oracle(eval_dir)
    result = toy_evaluate(oracle, toy_scorers, eval_dir, images_per_prompt=1, max_subjects=SUBJECTS)
    reference, other = result.conditions["reference"], result.conditions["other_reference"]
    assert reference["identity"] >= 0.95 and reference["text"] >= 0.95 and reference["own"] == reference["identity"]
    assert other["identity"] >= 0.95 and other["own"] <= 0.05  # the other subject shares no attribute
    assert reference["num_images"] == SUBJECTS * 6  # 6 test prompts, 1 image each
    assert all(call["prompt"].count("object") == 1 for call in oracle.calls)  # "{}" filled with the class word
    assert result.settings["chance"] == {"identity": CHANCE_IDENTITY, "text": CHANCE_TEXT}
    assert [(c, len(images)) for c, _, images in result.samples][:1] == [("reference", 6)]


@pytest.mark.slow
def test_no_reference_is_the_null_reference_and_a_blind_model_scores_what_the_prompt_gives(
    eval_dir: Path, toy_scorers
) -> None:
    oracle = Oracle(eval_dir)
    result = toy_evaluate(oracle, toy_scorers, eval_dir, max_subjects=SUBJECTS, conditions=("no_reference",))
    assert all(call["reference"] is None for call in oracle.calls)
    truth = [s.subject for s in read_toy_subjects(read_eval_set(eval_dir))[:SUBJECTS]]
    expected = np.mean([[getattr(FIXED, n) == getattr(s, n) for n in ("shape", "colour", "pattern")] for s in truth])
    assert result.conditions["no_reference"]["identity"] == pytest.approx(expected, abs=0.05)
    assert result.conditions["no_reference"]["text"] >= 0.95  # the scene still follows the prompt
    blind = toy_evaluate(Oracle(eval_dir, blind=True), toy_scorers, eval_dir, max_subjects=SUBJECTS)
    assert blind.conditions["reference"]["identity"] == pytest.approx(expected, abs=0.05)
    again = toy_evaluate(Oracle(eval_dir, blind=True), toy_scorers, eval_dir, max_subjects=SUBJECTS)
    assert again.conditions == blind.conditions  # the same arguments, the same numbers


def test_a_set_without_the_truth_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "cup").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "cup" / "00.png")
    (tmp_path / "prompts_object.txt").write_text("a {} on the sand, at the left\n")
    (tmp_path / "subjects.json").write_text(json.dumps({"cup": {"class": "cup", "kind": "object"}}))
    with pytest.raises(ValueError, match=r"subject 'cup' has no shape, colour, pattern.*cafe data toy"):
        toy_evaluate(None, None, tmp_path)
    with pytest.raises(ValueError, match=r"conditions: \[.sideways.\]"):
        toy_evaluate(None, None, tmp_path, conditions=("sideways",))
