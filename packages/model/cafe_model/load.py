"""Load a preset's customization model and pipeline: the one place a preset meets the loaders.

    model = load_model("tiny")                    # CustomizationModel, projector freshly initialized
    pipeline = load_pipeline("tiny")              # CustomizationPipeline around it, DDIM sampler
    load_adapter(pipeline.model, "export/")       # trained weights (cafe_model.export)

Every component goes through `from_pretrained`, for random presets too (from the model cache).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from cafe_model.customization_model import CustomizationModel
from cafe_model.pipeline import CustomizationPipeline
from cafe_model.presets import ModelPreset, get_preset
from cafe_model.reference_encoder import ReferenceEncoder
from cafe_vision.pretrained import load_pretrained


def load_model(
    preset: ModelPreset | str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> CustomizationModel:
    """The preset's `CustomizationModel` on `device`: frozen base and encoder, a fresh projector and reference k/v.

    `cache_dir` is the model cache random presets are built into (default `$CAFE_MODEL_CACHE`).
    Raises ValueError for an unknown preset name, OSError (with the download command) for weights
    missing from the local Hugging Face cache.
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    base = preset.base_source(cache_dir=cache_dir)
    tokenizer = load_pretrained(CLIPTokenizer.from_pretrained, base, subfolder="tokenizer")
    text_encoder = load_pretrained(CLIPTextModel.from_pretrained, base, subfolder="text_encoder", dtype=dtype)
    vae = load_pretrained(AutoencoderKL.from_pretrained, base, subfolder="vae", torch_dtype=dtype)
    unet = load_pretrained(UNet2DConditionModel.from_pretrained, base, subfolder="unet", torch_dtype=dtype)
    scheduler_config = load_pretrained(DDIMScheduler.load_config, base, subfolder="scheduler")
    reference_encoder = ReferenceEncoder.from_pretrained(
        preset.reference_encoder_source(cache_dir=cache_dir), feature=preset.reference_feature, dtype=dtype
    )
    model = CustomizationModel(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        reference_encoder=reference_encoder,
        projector_spec=preset.projector,
        scheduler_config=scheduler_config,
        preset_name=preset.name,
        train_unet=preset.trainable == "unet",
    )
    return model.to(device)


def load_pipeline(
    preset: ModelPreset | str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> CustomizationPipeline:
    """A `CustomizationPipeline` (DDIM sampler) around `load_model(preset, ...)`."""
    return CustomizationPipeline(load_model(preset, device=device, dtype=dtype, cache_dir=cache_dir))
