"""A DINO ViT at random init, built offline from a config and cached like a hub model.

The folder it writes is what `facebook/dino-vits16` holds (a `ViTModel` config, safetensors
weights, a `ViTImageProcessor` with ImageNet statistics), so `DinoEmbedder` loads it through the
same `from_pretrained` calls. Its features are random: only the shapes and the cost are real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RandomDinoSpec:
    """The sizes of a random-init DINO ViT (`ViTModel`, no pooler, as `facebook/dino-vits16`)."""

    name: str
    image_size_px: int
    patch_size_px: int
    hidden_size: int
    layers: int
    heads: int
    seed: int = 0
    # At transformers' default init (std 0.02) a tiny ViT gives every image nearly the same CLS
    # token; a wider init keeps different photos apart (checked in tests).
    init_std: float = 0.2

    def __post_init__(self) -> None:
        if self.image_size_px % self.patch_size_px:
            raise ValueError(
                f"{self.name}: image_size_px={self.image_size_px} is not a multiple of"
                f" patch_size_px={self.patch_size_px}"
            )


def build_random_dino(spec: RandomDinoSpec, folder: Path) -> None:
    """Write a random-init DINO ViT and its image processor into `folder` (deterministic in `spec.seed`)."""
    config = ViTConfig(
        image_size=spec.image_size_px,
        patch_size=spec.patch_size_px,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=4 * spec.hidden_size,
        initializer_range=spec.init_std,
    )
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = ViTModel(config, add_pooling_layer=False).eval()
    processor = ViTImageProcessor(
        size={"height": spec.image_size_px, "width": spec.image_size_px},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def random_dino_folder(spec: RandomDinoSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random DINO `spec`, built on first use; load it with `from_pretrained`."""
    recipe = {"builder": "dino_vit", "version": BUILD_VERSION, "transformers": transformers.__version__, **asdict(spec)}
    return cached_build(spec.name, recipe, lambda folder: build_random_dino(spec, folder), cache_dir=cache_dir)
