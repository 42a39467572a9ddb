"""Presets name every model of a job; real SAM checkpoints fail loudly with the fix when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from cafe_vision.load import load_captioner, load_grounder, load_segmenter
from cafe_vision.presets import PRESETS, get_preset
from cafe_vision.random_blip import RandomBlipSpec
from cafe_vision.random_grounding_dino import RandomGroundingDinoSpec
from cafe_vision.random_sam import RandomSamSpec
from cafe_vision.sam_checkpoint import CHECKPOINT_DIR_ENV_VAR, SamCheckpoint
from cafe_vision.sam_model import SAM_VIT_B, SAM_VIT_H


def test_all_four_presets_exist():
    assert set(PRESETS) == {"tiny", "medium", "base", "large"}
    for name in PRESETS:
        assert get_preset(name).name == name


def test_unknown_preset_lists_the_allowed_names():
    with pytest.raises(ValueError, match="unknown vision preset 'huge'") as info:
        get_preset("huge")
    for name in ("tiny", "medium", "base", "large"):
        assert name in str(info.value)


def test_random_presets_build_every_model():
    for name in ("tiny", "medium"):
        preset = get_preset(name)
        assert preset.is_random
        assert isinstance(preset.captioner, RandomBlipSpec)
        assert isinstance(preset.grounder, RandomGroundingDinoSpec)
        assert isinstance(preset.segmenter, RandomSamSpec)
        assert preset.grounder_image_size_px == preset.grounder.image_size_px


def test_real_presets_name_the_published_models():
    base, large = get_preset("base"), get_preset("large")
    assert not base.is_random and not large.is_random
    assert base.captioner == large.captioner == "Salesforce/blip-image-captioning-large"
    assert base.grounder == "IDEA-Research/grounding-dino-tiny"
    assert large.grounder == "IDEA-Research/grounding-dino-base"
    assert base.segmenter == SamCheckpoint(SAM_VIT_B, "sam_vit_b_01ec64.pth")
    assert large.segmenter == SamCheckpoint(SAM_VIT_H, "sam_vit_h_4b8939.pth")
    assert base.captioner_source() == base.captioner  # hub ids pass through: nothing is built or fetched


def test_model_records_name_each_role():
    records = get_preset("large").model_records()
    assert records["grounder"] == {"name": "IDEA-Research/grounding-dino-base", "revision": "main"}
    assert records["segmenter"] == {"name": "segment-anything/vit_h", "revision": "sam_vit_h_4b8939.pth"}
    tiny = get_preset("tiny").model_records()
    assert set(tiny) == {"captioner", "grounder", "segmenter"}
    assert all(record["name"].startswith("cafe-random/") for record in tiny.values())


def test_missing_sam_checkpoint_without_env_var_says_what_to_do(monkeypatch):
    monkeypatch.delenv(CHECKPOINT_DIR_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        get_preset("large").segmenter_checkpoint()
    message = str(info.value)
    assert "sam_vit_h_4b8939.pth" in message
    assert CHECKPOINT_DIR_ENV_VAR in message
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth" in message


def test_missing_sam_checkpoint_in_env_dir_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv(CHECKPOINT_DIR_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        get_preset("base").segmenter_checkpoint()
    assert str(tmp_path / "sam_vit_b_01ec64.pth") in str(info.value)
    assert "wget https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in str(info.value)


def test_sam_checkpoint_found_in_env_dir_or_by_explicit_path(monkeypatch, tmp_path):
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    checkpoint.write_bytes(b"")
    monkeypatch.setenv(CHECKPOINT_DIR_ENV_VAR, str(tmp_path))
    assert get_preset("base").segmenter_checkpoint() == checkpoint
    monkeypatch.delenv(CHECKPOINT_DIR_ENV_VAR)
    assert get_preset("base").segmenter_checkpoint(checkpoint) == checkpoint
    with pytest.raises(FileNotFoundError, match="given path"):
        get_preset("base").segmenter_checkpoint(tmp_path / "elsewhere.pth")


def test_random_preset_refuses_an_explicit_checkpoint(tmp_path: Path):
    with pytest.raises(ValueError, match="random SAM"):
        get_preset("tiny").segmenter_checkpoint(tmp_path / "sam.pth", cache_dir=tmp_path)


def test_grounding_dino_spec_rejects_one_decoder_layer():
    tiny = get_preset("tiny").grounder
    assert isinstance(tiny, RandomGroundingDinoSpec)
    with pytest.raises(ValueError, match="at least 2"):
        RandomGroundingDinoSpec(**{**tiny.__dict__, "decoder_layers": 1})


@pytest.mark.slow
def test_medium_preset_builds_and_runs(tmp_path, photos):
    """The benchmark's preset: the same code path as tiny, larger random models (built here, ~2 s)."""
    medium = get_preset("medium")
    [caption] = load_captioner(medium, cache_dir=tmp_path)(photos[:1])
    [detections] = load_grounder(medium, cache_dir=tmp_path, box_threshold=0.0)(photos[:1], ["a person."])
    [[mask]] = load_segmenter(medium, cache_dir=tmp_path)(photos[:1], [[detections[0].box_xyxy]])
    assert caption and mask.mask.shape == (photos[0].height, photos[0].width)
