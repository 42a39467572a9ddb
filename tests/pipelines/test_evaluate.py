"""Evaluation on a DreamBench-style folder: layout checks, the CSV/JSON written, seeded numbers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from skimage import data

from cafe_model.load import load_pipeline
from cafe_pipelines.evaluate import CSV_NAME, JSON_NAME, evaluate, read_eval_set
from cafe_vision.scorers import Scorers

OBJECT_PROMPTS = ["a {} on a beach", "a {} in the snow"]
LIVE_PROMPTS = ["a {} in the jungle", "a {} wearing a hat", "a {} on a bed"]


def write_eval_set(root: Path, *, subjects_file: str = "json") -> Path:
    """Two subjects from scikit-image photos: a cat (live, 2 photos) and a cup (object, 1 photo)."""
    cat = Image.fromarray(data.chelsea()).resize((96, 64))
    cup = Image.fromarray(data.coffee()).resize((96, 64))
    (root / "cat").mkdir(parents=True)
    (root / "cup").mkdir()
    cat.save(root / "cat" / "00.jpg")
    ImageOps.mirror(cat).save(root / "cat" / "01.png")
    cup.save(root / "cup" / "00.jpg")
    (root / "cup" / "notes.md").write_text("not an image: ignored")
    (root / "prompts_object.txt").write_text("# object prompts\n" + "\n".join(OBJECT_PROMPTS) + "\n\n")
    (root / "prompts_live.txt").write_text("\n".join(LIVE_PROMPTS) + "\n")
    if subjects_file == "json":
        subjects = {"cat": {"class": "cat", "kind": "live"}, "cup": {"class": "coffee cup", "kind": "object"}}
        (root / "subjects.json").write_text(json.dumps(subjects))
    else:
        (root / "subjects.txt").write_text("# subject,class,kind\ncat,cat,live\ncup,coffee cup,object\n")
    return root


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def pipeline(model_cache: Path):
    return load_pipeline("tiny", cache_dir=model_cache)


@pytest.fixture(scope="module")
def scorers(model_cache: Path) -> Scorers:
    return Scorers("tiny", cache_dir=model_cache)


def test_reads_both_subject_files(tmp_path: Path) -> None:
    for kind in ("json", "txt"):
        eval_set = read_eval_set(write_eval_set(tmp_path / kind, subjects_file=kind))
        assert [(s.name, s.class_phrase, s.kind, len(s.image_paths)) for s in eval_set.subjects] == [
            ("cat", "cat", "live", 2),
            ("cup", "coffee cup", "object", 1),
        ]
        assert eval_set.subjects[0].image_paths[0].name == "00.jpg"  # the reference: first by name
        assert eval_set.prompts_for(eval_set.subjects[1]) == ["a coffee cup on a beach", "a coffee cup in the snow"]


def _break(root: Path, how: str) -> None:
    if how == "no_subjects_file":
        (root / "subjects.json").unlink()
    elif how == "both_subject_files":
        (root / "subjects.txt").write_text("cat,cat,live\n")
    elif how == "unlisted_folder":
        (root / "dog").mkdir()
        Image.new("RGB", (8, 8)).save(root / "dog" / "a.png")
    elif how == "listed_without_folder":
        shutil.rmtree(root / "cup")
    elif how == "folder_without_images":
        for path in (root / "cup").glob("*.jpg"):
            path.unlink()
    elif how == "no_live_prompts":
        (root / "prompts_live.txt").unlink()
    elif how == "prompt_without_placeholder":
        (root / "prompts_object.txt").write_text("a photo on a beach\n")
    elif how == "bad_kind":
        (root / "subjects.json").write_text(json.dumps({"cat": {"class": "cat", "kind": "animal"}, "cup": {}}))
    elif how == "bad_json":
        (root / "subjects.json").write_text("{cat: live")


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("no_subjects_file", "no subjects.json or subjects.txt"),
        ("both_subject_files", "both subjects.json and subjects.txt"),
        ("unlisted_folder", "folder(s) dog have no entry"),
        ("listed_without_folder", "subject(s) cup listed but no folder"),
        ("folder_without_images", "cup holds no images"),
        ("no_live_prompts", "prompts_live.txt: missing"),
        ("prompt_without_placeholder", "has no `{}`"),
        ("bad_kind", "kind 'animal' must be one of object, live"),
        ("bad_json", "subjects.json: not valid JSON"),
    ],
)
def test_bad_layouts_are_named(tmp_path: Path, how: str, says: str) -> None:
    root = write_eval_set(tmp_path / "set")
    _break(root, how)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        read_eval_set(root)
    assert says in str(error.value)


def test_subjects_txt_needs_three_columns(tmp_path: Path) -> None:
    root = write_eval_set(tmp_path / "set", subjects_file="txt")
    (root / "subjects.txt").write_text("cat,live\n")
    with pytest.raises(ValueError, match=r"subjects.txt:1: 'cat,live': expected `subject,class phrase,live\|object`"):
        read_eval_set(root)


@pytest.mark.slow
def test_evaluate_writes_rows_and_repeats_exactly(tmp_path: Path, pipeline, scorers: Scorers) -> None:
    eval_set = read_eval_set(write_eval_set(tmp_path / "set"))

    def run(out: Path, seed: int = 0):
        return evaluate(pipeline, scorers, eval_set, out_dir=out, images_per_prompt=2, seed=seed, num_steps=2,
                        settings={"checkpoint": "none"})  # fmt: skip

    first = run(tmp_path / "a")
    with open(first.csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["subject"] for row in rows] == ["cat", "cup", "overall"]
    assert [int(row["num_images"]) for row in rows] == [6, 4, 10]  # prompts x images_per_prompt
    assert [int(row["num_real_images"]) for row in rows] == [2, 1, 3]
    assert rows[0]["kind"] == "live" and rows[1]["class"] == "coffee cup"
    for row in rows:
        assert -1.0 <= float(row["dino"]) <= 1.0 and -1.0 <= float(row["clip_i"]) <= 1.0
        assert 0.0 <= float(row["clip_t"]) <= 100.0
    overall = json.loads((tmp_path / "a" / JSON_NAME).read_text())
    assert overall["overall"]["dino"] == pytest.approx((first.rows[0]["dino"] + first.rows[1]["dino"]) / 2)
    assert overall["settings"]["checkpoint"] == "none" and overall["settings"]["scorer_preset"] == "tiny"
    assert len(overall["images"]) == 10
    assert {image["prompt"] for image in overall["images"] if image["subject"] == "cup"} == {
        "a coffee cup on a beach",
        "a coffee cup in the snow",
    }
    assert all((tmp_path / "a" / image["path"]).is_file() for image in overall["images"])
    assert (tmp_path / "a" / CSV_NAME).is_file()

    second = run(tmp_path / "b")
    assert second.rows == first.rows and second.overall == first.overall
    assert [i["clip_t"] for i in second.images] == [i["clip_t"] for i in first.images]
    other = run(tmp_path / "c", seed=1)
    assert [i["dino"] for i in other.images] != [i["dino"] for i in first.images]


def test_images_per_prompt_must_be_positive(tmp_path: Path) -> None:
    eval_set = read_eval_set(write_eval_set(tmp_path / "set"))
    with pytest.raises(ValueError, match="images_per_prompt=0"):  # checked before anything is generated
        evaluate(None, None, eval_set, out_dir=tmp_path / "out", images_per_prompt=0)


def test_a_cut_out_first_image_is_the_reference_and_not_a_real_photo(tmp_path: Path, scorers: Scorers) -> None:
    root = write_eval_set(tmp_path / "set")
    cut_out = Image.open(root / "cat" / "00.jpg").convert("RGBA")
    alpha = Image.new("L", cut_out.size, 0)
    alpha.paste(255, (20, 10, 70, 50))
    cut_out.putalpha(alpha)
    (root / "cat" / "00.jpg").unlink()
    cut_out.save(root / "cat" / "00-reference.png")
    given: list[Image.Image] = []

    def draw(reference: Image.Image, prompt: str, *, batch_size: int, **_: object) -> list[Image.Image]:
        """A stand-in generator (this test is about what evaluate hands it): the reference, flattened."""
        given.append(reference)
        return [reference.convert("RGB")] * batch_size

    result = evaluate(draw, scorers, read_eval_set(root), out_dir=tmp_path / "out", images_per_prompt=1)
    cat, cup = result.rows
    assert cat["num_real_images"] == 1 and cup["num_real_images"] == 1  # the cut-out is not a real photo
    assert given[0].mode == "RGBA" and given[0].getchannel("A").getextrema() == (0, 255)  # alpha kept
    assert given[-1].getchannel("A").getextrema() == (255, 255)  # a plain photo: the whole photo, full alpha
