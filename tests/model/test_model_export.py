"""Export: stock diffusers `load_ip_adapter` reproduces our images; cafe's own format round-trips the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline
from model_helpers import pixel_difference
from safetensors.torch import load_file

from cafe_model.export import export_adapter, load_adapter, stock_loadable
from cafe_model.load import load_model
from cafe_model.pipeline import CustomizationPipeline
from cafe_model.presets import get_preset

PROMPT = "a photo of a cat in a garden"
# Same components, seed, scheduler and scale: only float summation order may differ (in practice, nothing).
TOLERANCE_8BIT = 2


def test_stock_diffusers_loads_the_export_and_makes_the_same_images(
    trained_tiny_model, model_cache: Path, reference_photo, tmp_path: Path
) -> None:
    export = export_adapter(trained_tiny_model, tmp_path / "adapter")
    assert export.format == "diffusers-ip-adapter" and stock_loadable(trained_tiny_model)
    keys = set(load_file(export.folder / export.weight_name))
    assert {"image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight", "image_proj.norm.bias"} <= keys
    assert {"ip_adapter.1.to_k_ip.weight", "ip_adapter.7.to_v_ip.weight"} <= keys and len(keys) == 4 + 2 * 4

    # A stock pipeline from the same base folder; the adapter and image encoder come from the export only.
    stock = StableDiffusionPipeline.from_pretrained(
        get_preset("tiny").base_source(cache_dir=model_cache), safety_checker=None, requires_safety_checker=False
    )
    stock.set_progress_bar_config(disable=True)
    stock.load_ip_adapter(
        str(export.folder), subfolder="", weight_name="ip_adapter.safetensors", image_encoder_folder="image_encoder"
    )
    ours = CustomizationPipeline(trained_tiny_model)
    for scheduler_class, scale in ((DDIMScheduler, 0.7), (EulerDiscreteScheduler, 1.0)):
        stock.scheduler = scheduler_class.from_config(stock.scheduler.config)
        ours.scheduler = scheduler_class.from_config(ours.scheduler.config)
        stock.set_ip_adapter_scale(scale)
        expected = stock(
            PROMPT,
            ip_adapter_image=reference_photo,
            negative_prompt="blurry",
            num_inference_steps=4,
            guidance_scale=6.0,
            generator=torch.Generator().manual_seed(5),
            num_images_per_prompt=2,
            height=64,
            width=48,
        ).images
        images = ours(
            reference_photo,
            PROMPT,
            negative_prompt="blurry",
            num_steps=4,
            text_guidance=6.0,
            reference_guidance=6.0,
            reference_scale=scale,
            seed=5,
            batch_size=2,
            height_px=64,
            width_px=48,
        )
        assert len(images) == len(expected) == 2
        for image, stock_image in zip(images, expected, strict=True):
            assert image.size == stock_image.size == (48, 64)
            assert pixel_difference(image, stock_image) <= TOLERANCE_8BIT


def test_stock_export_loads_back_into_our_model(trained_tiny_model, tiny_model, model_cache, tmp_path) -> None:
    export = export_adapter(trained_tiny_model, tmp_path / "adapter", include_image_encoder=False)
    assert not (export.folder / "image_encoder").exists()
    fresh = load_model("tiny", cache_dir=model_cache)
    metadata = load_adapter(fresh, export.folder)
    assert metadata["preset"] == "tiny" and metadata["format"] == "diffusers-ip-adapter"
    expected = trained_tiny_model.trainable_state_dict()
    for name, tensor in fresh.trainable_state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_resampler_exports_in_cafe_format_and_round_trips(
    trained_tiny_dinov2_model, model_cache, reference_photo, tmp_path
) -> None:
    model = trained_tiny_dinov2_model
    export = export_adapter(model, tmp_path / "adapter")
    assert export.format == "cafe-adapter" and not stock_loadable(model)
    metadata = json.loads((export.folder / "cafe_adapter.json").read_text())
    assert metadata["projector"]["kind"] == "resampler" and metadata["reference_feature"] == "penultimate_tokens"
    assert set(load_file(export.folder / export.weight_name)) == set(model.trainable_state_dict())

    fresh = load_model("tiny-dinov2", cache_dir=model_cache)
    load_adapter(fresh, export.folder)
    settings = {"num_steps": 3, "seed": 4, "text_guidance": 5.0, "reference_guidance": 3.0}
    expected = CustomizationPipeline(model)(reference_photo, PROMPT, **settings)
    images = CustomizationPipeline(fresh)(reference_photo, PROMPT, **settings)
    assert pixel_difference(images[0], expected[0]) == 0


def test_export_refuses_to_overwrite_and_mismatched_loads_fail(
    trained_tiny_model, trained_tiny_dinov2_model, tmp_path
) -> None:
    folder = export_adapter(trained_tiny_model, tmp_path / "adapter", include_image_encoder=False).folder
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_adapter(trained_tiny_model, folder)
    export_adapter(trained_tiny_model, folder, include_image_encoder=False, overwrite=True)
    assert [path.name for path in tmp_path.iterdir()] == ["adapter"]  # no temporaries left behind
    with pytest.raises(ValueError, match="another preset"):
        load_adapter(trained_tiny_dinov2_model, folder)
    with pytest.raises(FileNotFoundError, match="not a cafe adapter export"):
        load_adapter(trained_tiny_model, tmp_path)
