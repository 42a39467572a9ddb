"""`cafe data toy`: toy-world triples in the data contract, a held-out eval set `cafe eval` reads, and the
refusals (bad options, an output that already holds a set) that write nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core.layout import SetLayout
from cafe_core.toy import (
    BACKGROUND_NAMES,
    POSITIONS,
    SIZE_NAMES,
    SUBJECT_WORD,
    Scene,
    Subject,
    held_out_subjects,
    in_training,
    is_held_out,
    parse_caption,
    parse_scene,
    render,
    train_subjects,
)
from cafe_pipelines.toy_data import (
    EVAL_SCENES,
    REFERENCE_NAME,
    SUBJECT_ORDER,
    SUMMARY_NAME,
    ToyDataConfig,
    cut_out,
    make_toy_data,
    subject_slug,
)

runner = CliRunner()


def samples(train: Path) -> list[dict]:
    """Every sample of a shard set, its key and members as bytes, through the stock webdataset reader
    (without the reader's `__url__` and `__local_path__`)."""
    urls = [str(p) for p in sorted(train.glob("*.tar"))]
    assert urls, f"no shards in {train}"
    return [
        {name: value for name, value in sample.items() if name == "__key__" or not name.startswith("__")}
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False)
    ]


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def every_subject(tmp_path_factory: pytest.TempPathFactory) -> tuple[ToyDataConfig, Path]:
    """All training subjects, 3 triples each, 100 per shard (so several shards)."""
    output = tmp_path_factory.mktemp("toy") / "out"
    config = ToyDataConfig(output=str(output), images_per_subject=3, samples_per_shard=100)
    make_toy_data(config)
    return config, output


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_bytes(tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []

    def write(name: str, seed: int, num_subjects: int = 4) -> Path:
        output = tmp_path / name
        config = ToyDataConfig(output=str(output), num_subjects=num_subjects, images_per_subject=3, seed=seed)
        make_toy_data(config, on_progress=lambda done, total: progress.append((done, total)))
        return output

    first = write("a", 0)
    # One step per image index over all subjects, then one per eval subject: 3 + 28 calls.
    assert progress[:3] == [(4, 40), (8, 40), (12, 40)] and progress[-1] == (40, 40) and len(progress) == 31
    again, other = write("b", 0), write("c", 1)
    members = {s["__key__"]: s for s in samples(first / "train")}
    assert len(members) == 12
    assert members == {s["__key__"]: s for s in samples(again / "train")}
    # Tars are byte-identical too, and so is the eval set.
    assert [p.read_bytes() for p in sorted((first / "train").glob("*.tar"))] == [
        p.read_bytes() for p in sorted((again / "train").glob("*.tar"))
    ]
    assert listing(first / "eval") == listing(again / "eval")
    others = samples(other / "train")
    assert not {s["target.jpg"] for s in others} & {s["target.jpg"] for s in members.values()}
    assert not {s["reference.png"] for s in others} & {s["reference.png"] for s in members.values()}
    assert listing(other / "eval")["red-solid-circle/01.png"] != listing(first / "eval")["red-solid-circle/01.png"]
    # Fewer subjects: the same triples of the subjects kept (seeds follow the subject, not the run).
    fewer = {s["__key__"]: s for s in samples(write("d", 0, num_subjects=2) / "train")}
    assert fewer.items() <= members.items()


def test_no_held_out_subject_or_scene_pair_in_training(every_subject: tuple[ToyDataConfig, Path]) -> None:
    config, output = every_subject
    assert len(SetLayout(output / "train").done_numbers()) == 4  # 348 triples, 100 per shard
    seen: dict[Subject, int] = {}
    for sample in samples(output / "train"):
        metadata = json.loads(sample["json"])
        subject, scene = parse_caption(metadata["caption"])
        assert not is_held_out(subject), metadata["caption"]
        assert in_training(subject, scene.background), metadata["caption"]
        # The prompt names the same scene, the subject only as "object"; so does the subject phrase.
        assert parse_scene(sample["prompt.txt"].decode()) == (SUBJECT_WORD, scene)
        assert metadata["subject"] == SUBJECT_WORD
        assert metadata["source"]["uri"] == f"cafe_core.toy seed={config.seed}"
        assert metadata["models"]["renderer"]["name"] == "cafe_core.toy"
        seen[subject] = seen.get(subject, 0) + 1
    assert seen == dict.fromkeys(train_subjects(), 3)


def test_each_reference_is_cut_out_of_another_rendering(every_subject: tuple[ToyDataConfig, Path]) -> None:
    config, output = every_subject
    for sample in samples(output / "train"):
        toy = json.loads(sample["json"])["toy"]
        subject = Subject(**toy["subject"])
        target_scene, reference_scene = Scene(**toy["target"]["scene"]), Scene(**toy["reference"]["scene"])
        assert target_scene.background != reference_scene.background
        assert target_scene.position != reference_scene.position
        assert target_scene.size != reference_scene.size
        assert in_training(subject, reference_scene.background)
        # Recomputed from the recorded scene and seed: the reference is exactly that rendering's cut-out ...
        source = render(subject, reference_scene, size_px=config.size_px, seed=toy["reference"]["seed"])
        reference = Image.open(io.BytesIO(sample["reference.png"]))
        assert reference.mode == "RGBA"
        assert np.array_equal(np.asarray(reference), np.asarray(cut_out(source)))
        x0, y0, x1, y1 = source.box_xyxy
        alpha = np.asarray(reference)[..., 3]
        assert set(np.unique(alpha)) <= {0, 255}
        assert (alpha == 255).sum() == source.mask.sum() == source.mask[y0:y1, x0:x1].sum()
        # ... and the mask is exactly the target rendering's.
        target = render(subject, target_scene, size_px=config.size_px, seed=toy["target"]["seed"])
        mask = np.asarray(Image.open(io.BytesIO(sample["mask.png"])))
        assert np.array_equal(mask == 255, target.mask)
        assert json.loads(sample["json"])["box_xyxy"] == list(target.box_xyxy)


def test_cafe_shards_validate_passes(every_subject: tuple[ToyDataConfig, Path]) -> None:
    _, output = every_subject
    result = runner.invoke(app, ["shards", "validate", str(output / "train")])
    assert result.exit_code == 0, result.output
    assert "valid: 4 shards, 348 samples checked" in result.output


def test_read_eval_set_accepts_the_eval_set(every_subject: tuple[ToyDataConfig, Path]) -> None:
    from cafe_pipelines.evaluate import read_eval_set  # loads the scorers' torch: only here

    config, output = every_subject
    eval_set = read_eval_set(output / "eval")
    assert [s.name for s in eval_set.subjects] == sorted(subject_slug(s) for s in held_out_subjects())
    for subject in eval_set.subjects:
        assert (subject.class_phrase, subject.kind) == ("object", "object")
        assert [p.name for p in subject.image_paths] == [REFERENCE_NAME, "01.png", "02.png", "03.png", "04.png"]
        reference = Image.open(subject.image_paths[0])
        assert reference.mode == "RGBA" and set(np.unique(np.asarray(reference)[..., 3])) <= {0, 255}
        assert all(Image.open(p).mode == "RGB" for p in subject.image_paths[1:])
        assert Image.open(subject.image_paths[1]).size == (config.size_px, config.size_px)
    prompts = eval_set.prompts["object"]
    scenes = [parse_scene(p.replace("{}", SUBJECT_WORD))[1] for p in prompts]
    assert scenes == list(EVAL_SCENES)
    assert {s.background for s in scenes} == set(BACKGROUND_NAMES)
    assert {s.position for s in scenes} == set(POSITIONS) and {s.size for s in scenes} == set(SIZE_NAMES)


def test_toy_data_json_records_settings_counts_and_subjects(every_subject: tuple[ToyDataConfig, Path]) -> None:
    config, output = every_subject
    summary = json.loads((output / SUMMARY_NAME).read_text())
    assert summary["settings"]["images_per_subject"] == 3 and summary["settings"]["seed"] == config.seed
    assert summary["counts"] == {
        "train_subjects": 116,
        "train_triples": 348,
        "train_shards": 4,
        "eval_subjects": 28,
        "eval_images": 140,
        "eval_prompts": 6,
    }
    assert summary["train_subjects"] == [s.phrase for s in SUBJECT_ORDER]
    assert sorted(summary["eval_subjects"].values()) == sorted(s.phrase for s in held_out_subjects())


def test_the_first_subjects_cover_every_shape_and_colour() -> None:
    assert sorted(SUBJECT_ORDER, key=str) == sorted(train_subjects(), key=str)
    assert len({s.shape for s in SUBJECT_ORDER[:6]}) == 6
    assert len({s.colour for s in SUBJECT_ORDER[:8]}) == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"images_per_subject": 0}, "images-per-subject: 0 must be an integer >= 1"),
        ({"size_px": 36}, "size: 36 must be a multiple of 8"),
        ({"size_px": 16}, "size: 16 must be a multiple of 8 from 24"),
        ({"num_subjects": 0}, "subjects: 0 is out of range; give 1 to 116"),
        ({"num_subjects": 117}, "subjects: 117 is out of range"),
        ({"eval_images_per_subject": 0}, "eval-images: 0 must be an integer from 1"),
        ({"seed": -1}, "seed: -1 must be an integer >= 0"),
    ],
)
def test_bad_options_raise_and_write_nothing(tmp_path: Path, options: dict, message: str) -> None:
    output = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        make_toy_data(ToyDataConfig(output=str(output), **options))
    assert not output.exists()


def test_an_output_that_holds_a_set_is_refused_and_left_alone(every_subject: tuple[ToyDataConfig, Path]) -> None:
    config, output = every_subject
    before = listing(output)
    with pytest.raises(ValueError, match="pass another --output, or remove it first"):
        make_toy_data(config)
    train = output / "train"  # a shard set itself, given as the output
    with pytest.raises(ValueError, match="already holds a shard set"):
        make_toy_data(ToyDataConfig(output=str(train), num_subjects=1, images_per_subject=1))
    assert listing(output) == before


def test_the_cli_writes_the_set_and_exits_2_on_a_bad_option(tmp_path: Path) -> None:
    output = tmp_path / "toy"
    args = ["data", "toy", "--output", str(output), "--subjects", "2", "--images-per-subject", "2", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"shards in {output / 'train'}" in result.output
    summary = json.loads((output / SUMMARY_NAME).read_text())
    assert summary["counts"]["train_triples"] == 4 and summary["settings"]["seed"] == 3
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "pass another --output" in again.output
    bad = runner.invoke(app, ["data", "toy", "--output", str(tmp_path / "bad"), "--size", "20"])
    assert bad.exit_code == 2 and "size: 20 must be a multiple of 8" in bad.output
    assert not (tmp_path / "bad").exists()
