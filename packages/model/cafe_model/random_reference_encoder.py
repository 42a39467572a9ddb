"""A reference image encoder (CLIP vision or DINOv2) at random init, built offline and cached like a hub model.

The folder holds what `openai/clip-vit-large-patch14` or `facebook/dinov2-base` hold for the vision
side (config, safetensors weights, `preprocessor_config.json`), so `ReferenceEncoder` loads it through
the same `from_pretrained` calls as real weights. The CLIP one is saved as
`CLIPVisionModelWithProjection`, the class stock diffusers loads IP-Adapter image encoders with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import transformers
from transformers import (
    BitImageProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    Dinov2Config,
    Dinov2Model,
)

from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VisionArchitecture = Literal["clip", "dinov2"]


@dataclass(frozen=True)
class RandomReferenceEncoderSpec:
    """The sizes of a random-init vision encoder; `projection_dim` is CLIP's image-embedding size (unused by DINOv2)."""

    name: str
    architecture: VisionArchitecture
    image_size_px: int
    patch_size_px: int
    hidden_size: int
    layers: int
    heads: int
    projection_dim: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ("clip", "dinov2"):
            raise ValueError(f"spec {self.name!r}: architecture={self.architecture!r}; use 'clip' or 'dinov2'")
        if self.image_size_px % self.patch_size_px:
            raise ValueError(
                f"spec {self.name!r}: image_size_px={self.image_size_px} is not a multiple of "
                f"patch_size_px={self.patch_size_px}"
            )


def reference_encoder_model(spec: RandomReferenceEncoderSpec) -> torch.nn.Module:
    """The vision model of `spec` at random init (torch's global RNG), in eval mode; on the meta device, shapes only."""
    if spec.architecture == "clip":
        model: torch.nn.Module = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=spec.hidden_size,
                intermediate_size=4 * spec.hidden_size,
                projection_dim=spec.projection_dim,
                num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads,
                image_size=spec.image_size_px,
                patch_size=spec.patch_size_px,
            )
        )
    else:
        model = Dinov2Model(
            Dinov2Config(
                hidden_size=spec.hidden_size,
                num_hidden_layers=spec.layers,
                num_attention_heads=spec.heads,
                image_size=spec.image_size_px,
                patch_size=spec.patch_size_px,
            )
        )
    return model.eval()


def build_random_reference_encoder(spec: RandomReferenceEncoderSpec, folder: Path) -> None:
    """Write a random-init vision model and its image processor into `folder` (deterministic in `spec.seed`)."""
    size = spec.image_size_px
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = reference_encoder_model(spec)
    if spec.architecture == "clip":
        # What openai/clip-vit-* use (CLIP's mean/std are the defaults), at the tiny size.
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    else:
        # facebook/dinov2-* ship a BitImageProcessor (resize, centre crop, ImageNet mean/std).
        processor = BitImageProcessor(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            do_center_crop=True,
            image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD),
        )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def random_reference_encoder_folder(spec: RandomReferenceEncoderSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random encoder `spec`, built on first use; load it with `from_pretrained`."""
    recipe = {
        "builder": "reference-encoder",
        "version": BUILD_VERSION,
        "transformers": transformers.__version__,
        **asdict(spec),
    }
    return cached_build(
        spec.name, recipe, lambda folder: build_random_reference_encoder(spec, folder), cache_dir=cache_dir
    )
