"""The toy preset's pieces: a base whose VAE learns toy pixels, a whole-UNet trainable set, the preset's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from cafe_model.customization_model import UNET_PREFIX
from cafe_model.export import stock_loadable
from cafe_model.load import load_model
from cafe_model.presets import PRESETS, ModelPreset, get_preset
from cafe_model.random_diffusion import VAE_SCALING_FACTOR, RandomDiffusionSpec, random_diffusion_folder
from cafe_model.toy_base import ToyBaseSpec, toy_base_folder, toy_batch

# The toy base's shape at a fraction of its cost: the same two VAE levels, narrower, a few steps.
SMALL_DIFFUSION = RandomDiffusionSpec(
    name="sd-toy-small",
    image_size_px=32,
    unet_block_channels=(16, 32),
    unet_layers_per_block=1,
    unet_heads=2,
    cross_attention_dim=16,
    vae_block_channels=(16, 32),
    vae_layers_per_block=1,
    norm_num_groups=8,
    text_hidden_size=16,
    text_layers=1,
    text_heads=2,
)
SMALL_TOY = ToyBaseSpec(diffusion=SMALL_DIFFUSION, vae_steps=100, vae_batch=8, vae_learning_rate=3e-3)


def _reconstruction_l1(vae: AutoencoderKL, pixels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((vae.decode(vae.encode(pixels).latent_dist.mean).sample - pixels).abs().mean())


@pytest.fixture(scope="module")
def small_toy_base(model_cache: Path) -> Path:
    return toy_base_folder(SMALL_TOY, cache_dir=model_cache)


def test_the_toy_vae_learns_toy_pixels_and_its_scale_is_measured(small_toy_base: Path, model_cache: Path) -> None:
    random_vae = AutoencoderKL.from_pretrained(random_diffusion_folder(SMALL_DIFFUSION, cache_dir=model_cache) / "vae")
    trained = StableDiffusionPipeline.from_pretrained(small_toy_base, safety_checker=None).vae  # the stock loader
    pixels = toy_batch(16, 32, np.random.default_rng(123))  # renderings the training never drew
    assert _reconstruction_l1(trained, pixels) < 0.7 * _reconstruction_l1(random_vae, pixels)
    scale = trained.config.scaling_factor
    assert scale != VAE_SCALING_FACTOR
    with torch.no_grad():
        scaled = trained.encode(pixels).latent_dist.mean * scale
    assert 0.7 < float(scaled.std()) < 1.4  # unit variance, as SD's 0.18215 gives its own VAE
    assert toy_base_folder(SMALL_TOY, cache_dir=model_cache) == small_toy_base  # cached, not retrained


def test_a_unet_preset_trains_the_whole_unet_and_an_adapter_preset_does_not(
    small_toy_base: Path, model_cache: Path
) -> None:
    tiny = get_preset("tiny")
    unet_preset = dataclasses.replace(tiny, name="small-toy", base=SMALL_TOY, trainable="unet",
                                      reference_encoder=tiny.reference_encoder)  # fmt: skip
    # The tiny CLIP projects to 32 wide, the small base's cross-attention is 16: fit the encoder's projection.
    unet_preset = dataclasses.replace(
        unet_preset, reference_encoder=dataclasses.replace(tiny.reference_encoder, projection_dim=16)
    )
    whole = load_model(unet_preset, cache_dir=model_cache)
    adapter = load_model("tiny", cache_dir=model_cache)
    unet_names = {f"{UNET_PREFIX}{name}" for name, _ in whole.unet.named_parameters()}
    assert unet_names <= set(whole.named_trainable_parameters())
    assert all(parameter.requires_grad for parameter in whole.unet.parameters())
    assert not any(parameter.requires_grad for parameter in whole.vae.parameters())
    assert not any(parameter.requires_grad for parameter in whole.text_encoder.parameters())
    assert set(whole.trainable_state_dict()) == set(whole.named_trainable_parameters())
    assert not stock_loadable(whole)  # an IP-Adapter file cannot hold a UNet
    frozen_unet = [name for name, p in adapter.unet.named_parameters() if not p.requires_grad]
    assert frozen_unet and f"{UNET_PREFIX}{frozen_unet[0]}" not in adapter.named_trainable_parameters()
    assert whole.vae_scale_factor == 2 and whole.default_size_px == 32


def test_trainable_must_be_a_known_choice() -> None:
    with pytest.raises(ValueError, match="trainable='everything'; choose one of adapter, unet"):
        dataclasses.replace(get_preset("tiny"), trainable="everything")


def test_the_toy_preset_is_not_random_and_picks_the_toy_scorers() -> None:
    toy = PRESETS["toy"]
    assert isinstance(toy, ModelPreset) and toy.is_toy and not toy.is_random and toy.trainable == "unet"
    assert toy.default_scorers == "toy"
    assert get_preset("tiny").default_scorers == "tiny" and get_preset("sd15").default_scorers == "base"
    assert all(PRESETS[name].trainable == "adapter" for name in PRESETS if name != "toy")


def test_a_bad_toy_base_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="vae_steps=0 must be at least 1"):
        ToyBaseSpec(diffusion=SMALL_DIFFUSION, vae_steps=0)
