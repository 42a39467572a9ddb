"""BuildConfig's validation and `apply_overrides` (which `cafe improve round` borrows): bad values and bad
types are refused naming the setting, an output never lands in its input, input roots are checked."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
from inputs import write_photos

from cafe_core.apart import OutputInsideInput
from cafe_core.settings import parse_sets
from cafe_pipelines.build_config import apply_overrides, build_recipe
from cafe_pipelines.improve_config import improve_recipe


def recipe(tmp_path: Path, **overrides):
    return build_recipe("tiny", input=str(tmp_path / "in"), output=str(tmp_path / "out"), **overrides)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_pixels=0", "max_pixels: 0 must be >= 1024"),
        ("max_pixels=-5", "max_pixels: -5 must be >= 1024"),
        ("max_side_px=0", "max_side_px: 0 must be >= 32"),
        ("max_phrases=0", "max_phrases: 0 must be >= 1"),
        ("caption_max_new_tokens=0", "caption_max_new_tokens: 0 must be >= 1"),
        ("min_hole_area_px=-1", "min_hole_area_px: -1 must be >= 0"),
        ("reference_margin=-0.1", "reference_margin: -0.1 must be >= 0"),
    ],
)
def test_non_positive_limits_are_refused(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(recipe(tmp_path), parse_sets([setting]))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gates.min_box_score=abc", "gates.min_box_score: 'abc' is not a number or null"),
        ("gates.mask_area_range=[0.1]", "gates.mask_area_range: [0.1] is not a list of 2 numbers or null"),
        ("gates.exactly_one_instance=3", "gates.exactly_one_instance: 3 is not true or false"),
        ("resources.caption.batch_size=2.5", "resources.caption.batch_size: 2.5 is not an integer"),
        ("inputs_per_shard=many", "inputs_per_shard: 'many' is not an integer"),
        ("prefix=001", "prefix: 1 is not a string (quote it to keep it as text)"),
        ("gates=3", "gates: 3 is not a mapping of its settings"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(tmp_path: Path, setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(recipe(tmp_path), parse_sets([setting]))


def test_values_are_taken_as_their_settings_types(tmp_path: Path) -> None:
    config = apply_overrides(
        recipe(tmp_path), parse_sets(["gates.min_box_score=1", "gates.mask_area_range=[0.1, 0.5]", "prefix='001'"])
    )
    assert config.gates.min_box_score == 1.0 and isinstance(config.gates.min_box_score, float)
    assert config.gates.mask_area_range == (0.1, 0.5) and config.prefix == "001"


def test_improve_round_overrides_name_the_key_and_the_type(tmp_path: Path) -> None:
    config = improve_recipe("tiny", checkpoint="run", shards=[str(tmp_path / "in")], output=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=re.escape("filter.min_dino: 'abc' is not a number or null")):
        apply_overrides(config, parse_sets(["filter.min_dino=abc"]))
    with pytest.raises(ValueError, match=re.escape("num_steps: 'x' is not an integer")):
        apply_overrides(config, parse_sets(["num_steps=x"]))


def test_an_output_in_or_around_its_input_folder_is_refused(tmp_path: Path) -> None:
    write_photos(tmp_path / "in", ("coffee",))
    for output in (tmp_path / "in", tmp_path / "in" / "out", tmp_path):
        with pytest.raises(OutputInsideInput, match="input folder"):
            build_recipe("tiny", input=str(tmp_path / "in"), output=str(output))
    build_recipe("tiny", input=str(tmp_path / "in"), output=str(tmp_path / "out"))  # apart: fine


def test_an_output_in_a_manifests_folder_is_refused_unless_roots_are_named(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "m.jsonl"
    manifest.write_text('{"path": "a.jpg"}\n')
    with pytest.raises(OutputInsideInput, match=r"manifest's folder .*--input-root"):
        build_recipe("tiny", input=str(manifest), output=str(tmp_path / "lists" / "out"))
    with pytest.raises(OutputInsideInput, match="manifest"):
        build_recipe("tiny", input=str(manifest), output=str(tmp_path / "lists"), input_roots=(str(tmp_path),))
    # The roots are named: the manifest's folder is not the root, and an output beside the manifest is fine.
    config = build_recipe("tiny", input=str(manifest), output=str(tmp_path / "lists" / "out"), input_roots=[tmp_path])
    assert config.input_roots == (str(tmp_path),)


def test_an_output_holding_an_input_tar_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for n in range(2):
        tarfile.open(tmp_path / "data" / f"c-{n:05d}.tar", "w").close()
    with pytest.raises(OutputInsideInput, match="input shard"):
        build_recipe("tiny", input=str(tmp_path / "data" / "c-{00000..00001}.tar"), output=str(tmp_path / "data"))
    build_recipe("tiny", input=str(tmp_path / "data" / "c-{00000..00001}.tar"), output=str(tmp_path / "out"))


def test_input_roots_must_be_folders_and_exclude_allow_outside_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"input_roots: .*nope is not an existing folder"):
        recipe(tmp_path, input_roots=[str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="not both"):
        recipe(tmp_path, input_roots=[str(tmp_path)], allow_outside_root=True)
    with pytest.raises(ValueError, match="allow_outside_root: 'yes please' is not true or false"):
        apply_overrides(recipe(tmp_path), {"allow_outside_root": "yes please"})
