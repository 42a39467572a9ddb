"""A CLIP at random init, built offline from a config and cached like a hub model.

The folder it writes is what `openai/clip-vit-base-patch32` holds (a `CLIPModel` config,
safetensors weights, a `CLIPProcessor` with CLIP's image statistics and its real BPE tokenizer,
rebuilt from open_clip's file by `clip_tokenizer`), so `ClipScorer` and torchmetrics' `CLIPScore`
load it through the same `from_pretrained` calls. Its embeddings are random: only the shapes and
the cost are real.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from cafe_vision.clip_tokenizer import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    MAX_LENGTH_TOKENS,
    VOCAB_SIZE,
    write_clip_tokenizer,
)
from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1
# OpenAI CLIP's image normalisation (the values in openai/clip-vit-*'s preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class RandomClipSpec:
    """The sizes of a random-init `CLIPModel` (ViT image tower, causal text tower, shared projection)."""

    name: str
    image_size_px: int
    patch_size_px: int
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    projection_dim: int
    seed: int = 0
    # Multiplies transformers' CLIP init: at 1.0 a tiny CLIP gives every photo nearly the same
    # embedding; wider keeps different photos apart (checked in tests).
    init_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.image_size_px % self.patch_size_px:
            raise ValueError(
                f"{self.name}: image_size_px={self.image_size_px} is not a multiple of"
                f" patch_size_px={self.patch_size_px}"
            )


def build_random_clip(spec: RandomClipSpec, folder: Path) -> None:
    """Write a random-init CLIP and its processor into `folder` (deterministic in `spec.seed`)."""
    tokenizer = write_clip_tokenizer(folder / "_tokenizer")
    text = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": spec.text_hidden_size,
        "intermediate_size": 4 * spec.text_hidden_size,
        "num_hidden_layers": spec.text_layers,
        "num_attention_heads": spec.text_heads,
        "max_position_embeddings": MAX_LENGTH_TOKENS,
        "bos_token_id": BOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": EOS_TOKEN_ID,
        "initializer_factor": spec.init_factor,
    }
    vision = {
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": 4 * spec.vision_hidden_size,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size_px,
        "patch_size": spec.patch_size_px,
        "initializer_factor": spec.init_factor,
    }
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=spec.projection_dim, initializer_factor=spec.init_factor
    )
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = CLIPModel(config).eval()
    side = spec.image_size_px
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    shutil.rmtree(folder / "_tokenizer")  # the scratch copy the processor was built from


def random_clip_folder(spec: RandomClipSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random CLIP `spec`, built on first use; load it with `from_pretrained`."""
    recipe = {"builder": "clip", "version": BUILD_VERSION, "transformers": transformers.__version__, **asdict(spec)}
    return cached_build(spec.name, recipe, lambda folder: build_random_clip(spec, folder), cache_dir=cache_dir)
