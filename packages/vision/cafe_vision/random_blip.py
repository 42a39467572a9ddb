"""A BLIP captioner at random init, built offline from a config and cached like a hub model.

The folder it writes is what `Salesforce/blip-image-captioning-*` holds (config, safetensors
weights, BlipProcessor files), so `Captioner` loads it through the same `from_pretrained` call.
Its captions are gibberish: only the shapes and the cost are real.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    BlipTextConfig,
    BlipVisionConfig,
)

from cafe_vision.bert_tokenizer import VOCAB_SIZE, write_bert_tokenizer
from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1


@dataclass(frozen=True)
class RandomBlipSpec:
    """The sizes of a random-init BLIP (`BlipForConditionalGeneration`)."""

    name: str
    image_size_px: int
    patch_size_px: int
    vision_hidden_size: int
    vision_layers: int
    vision_heads: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    seed: int = 0
    # At transformers' default init (std 0.02) a tiny BLIP gives every image the same caption:
    # the vision tower's features barely differ and the text decoder's own weights drown them.
    # A wider vision init and a narrower text init keep different photos apart (checked in tests).
    vision_init_std: float = 0.3
    text_init_std: float = 0.05


def build_random_blip(spec: RandomBlipSpec, folder: Path) -> None:
    """Write a random-init BLIP model and its processor into `folder` (deterministic in `spec.seed`)."""
    # BLIP's text side is bert-base-uncased plus [DEC] (its BOS, id 30522) and [ENC] (30523).
    tokenizer = write_bert_tokenizer(folder / "_tokenizer", bos_token="[DEC]", additional_special_tokens=["[ENC]"])
    vision = BlipVisionConfig(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=4 * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size_px,
        patch_size=spec.patch_size_px,
        initializer_range=spec.vision_init_std,
    )
    text = BlipTextConfig(
        vocab_size=VOCAB_SIZE + 2,
        hidden_size=spec.text_hidden_size,
        intermediate_size=4 * spec.text_hidden_size,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        encoder_hidden_size=spec.vision_hidden_size,
        max_position_embeddings=128,
        initializer_range=spec.text_init_std,
    )
    config = BlipConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=spec.text_hidden_size
    )
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = BlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": spec.image_size_px, "width": spec.image_size_px})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    shutil.rmtree(folder / "_tokenizer")  # the scratch copy the processor was built from


def random_blip_folder(spec: RandomBlipSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random BLIP `spec`, built on first use; load it with `from_pretrained`."""
    recipe = {"builder": "blip", "version": BUILD_VERSION, "transformers": transformers.__version__, **asdict(spec)}
    return cached_build(spec.name, recipe, lambda folder: build_random_blip(spec, folder), cache_dir=cache_dir)
