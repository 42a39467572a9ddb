"""Presets name every model; random ones are built once into the cache and loaded through from_pretrained."""

from __future__ import annotations

from pathlib import Path

import pytest

from cafe_model.load import load_model
from cafe_model.presets import (
    CLIP_VIT_L14_HUB_ID,
    DINOV2_BASE_HUB_ID,
    PRESETS,
    SD15_HUB_ID,
    SD21_HUB_ID,
    ModelPreset,
    get_preset,
)
from cafe_model.projector import LinearProjectorSpec, ResamplerProjectorSpec


def test_unknown_preset_lists_the_known_ones(model_cache: Path) -> None:
    with pytest.raises(ValueError, match="unknown model preset 'sd99'") as info:
        get_preset("sd99")
    for name in ("tiny", "sd15", "sd21", "sd15-dinov2"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="known presets"):
        load_model("sd99", cache_dir=model_cache)


def test_real_presets_name_the_published_models() -> None:
    for name, base in (("sd15", SD15_HUB_ID), ("sd21", SD21_HUB_ID)):
        clip, dino = get_preset(name), get_preset(f"{name}-dinov2")
        assert clip.base == dino.base == base and not clip.is_random
        assert clip.reference_encoder == CLIP_VIT_L14_HUB_ID and clip.reference_feature == "image_embeds"
        assert clip.projector == LinearProjectorSpec(num_tokens=4)
        assert dino.reference_encoder == DINOV2_BASE_HUB_ID and dino.reference_feature == "penultimate_tokens"
        assert isinstance(dino.projector, ResamplerProjectorSpec)
        assert clip.base_source() == base  # hub ids pass through: nothing is built or fetched
    assert get_preset("sd15").resolution_px == 512 and get_preset("sd21").resolution_px == 768
    assert all(PRESETS[name].is_random for name in ("tiny", "tiny-dinov2", "sd15-random"))


def test_preset_resolution_must_be_a_multiple_of_8() -> None:
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="resolution_px=100 must be a positive multiple of 8"):
        ModelPreset(
            name="odd",
            base=tiny.base,
            reference_encoder=tiny.reference_encoder,
            reference_feature="image_embeds",
            projector=tiny.projector,
            resolution_px=100,
        )


def test_tiny_preset_is_cached_as_hub_style_folders(tiny_model, model_cache: Path) -> None:
    preset = get_preset("tiny")
    base = Path(preset.base_source(cache_dir=model_cache))
    encoder = Path(preset.reference_encoder_source(cache_dir=model_cache))
    assert base.parent == encoder.parent == model_cache
    for part in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (base / part).exists()
    assert (encoder / "config.json").is_file() and (encoder / "preprocessor_config.json").is_file()
    before = {path: path.stat().st_mtime_ns for path in base.rglob("*")}
    assert Path(preset.base_source(cache_dir=model_cache)) == base  # reused, not rebuilt
    assert {path: path.stat().st_mtime_ns for path in base.rglob("*")} == before
    assert tiny_model.preset_name == "tiny" and tiny_model.default_size_px == preset.resolution_px
