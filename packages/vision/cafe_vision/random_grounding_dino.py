"""A Grounding DINO at random init, built offline from a config and cached like a hub model.

The folder it writes is what `IDEA-Research/grounding-dino-*` holds (config, safetensors
weights, GroundingDinoProcessor files with the bert-base-uncased tokenizer), so `Grounder` loads
it through the same `from_pretrained` call. Its boxes and scores are random: only the shapes and
the cost are real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from transformers import (
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    SwinConfig,
)
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoMLPPredictionHead

from cafe_vision.bert_tokenizer import VOCAB_SIZE, write_bert_tokenizer
from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1


@dataclass(frozen=True)
class RandomGroundingDinoSpec:
    """The sizes of a random-init `GroundingDinoForObjectDetection` (Swin backbone, BERT text encoder)."""

    name: str
    image_size_px: int
    swin_embed_dim: int
    swin_depths: tuple[int, int, int, int]
    swin_heads: tuple[int, int, int, int]
    swin_window_size: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    attention_heads: int
    num_queries: int
    seed: int = 0
    # Output shaping (the weights stay random; see build_random_grounding_dino).
    box_head_init_std: float = 0.3
    box_size_logit_bias: float = 1.5
    score_scale: float = 0.2

    def __post_init__(self) -> None:
        if self.decoder_layers < 2:
            # transformers 5 fails to build GroundingDinoForObjectDetection with one decoder layer.
            raise ValueError(f"decoder_layers={self.decoder_layers}: Grounding DINO needs at least 2 on transformers 5")


def build_random_grounding_dino(spec: RandomGroundingDinoSpec, folder: Path) -> None:
    """Write a random-init Grounding DINO and its processor into `folder` (deterministic in `spec.seed`)."""
    tokenizer = write_bert_tokenizer(folder / "_tokenizer")
    backbone = SwinConfig(
        image_size=spec.image_size_px,
        patch_size=4,
        embed_dim=spec.swin_embed_dim,
        depths=list(spec.swin_depths),
        num_heads=list(spec.swin_heads),
        window_size=spec.swin_window_size,
        # The three last stages feed the encoder, as in grounding-dino-tiny; a fourth level is a conv on top.
        out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=spec.text_hidden_size,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        intermediate_size=4 * spec.text_hidden_size,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=spec.d_model,
        encoder_layers=spec.encoder_layers,
        decoder_layers=spec.decoder_layers,
        encoder_ffn_dim=4 * spec.d_model,
        decoder_ffn_dim=4 * spec.d_model,
        encoder_attention_heads=spec.attention_heads,
        decoder_attention_heads=spec.attention_heads,
        num_queries=spec.num_queries,
    )
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = GroundingDinoForObjectDetection(config).eval()
        _shape_outputs(model, spec)
    side = spec.image_size_px
    image_processor = GroundingDinoImageProcessor(
        size={"max_height": side, "max_width": side}, pad_size={"height": side, "width": side}
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    for scratch in (folder / "_tokenizer").iterdir():
        scratch.unlink()
    (folder / "_tokenizer").rmdir()


def _shape_outputs(model: GroundingDinoForObjectDetection, spec: RandomGroundingDinoSpec) -> None:
    """Make a random Grounding DINO's outputs look like a trained one's, so they exercise the code downstream.

    - Its box heads are zero-initialised, so every box would be a proposal anchor (5 % of the
      image side, on a grid, never overlapping): random head weights move and resize the boxes.
    - A bias on the width/height outputs makes boxes subject-sized (their longer side spans 5-95 %
      of the image's, median about 50 %, with `box_size_logit_bias=1.5`), so the size gates of a
      data engine pass some of them.
    - Scaling the decoder's last LayerNorm down spreads the scores over (0, 1) instead of
      saturating at 1, so thresholds and the best-score choice have something to choose.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GroundingDinoMLPPredictionHead):
                for layer in module.layers:
                    layer.weight.normal_(std=spec.box_head_init_std)
                module.layers[-1].bias[2:4] = spec.box_size_logit_bias  # (cx, cy, w, h) deltas in logit space
        model.model.decoder.layer_norm.weight.mul_(spec.score_scale)


def random_grounding_dino_folder(spec: RandomGroundingDinoSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random Grounding DINO `spec`, built on first use; load it with `from_pretrained`."""
    recipe = {"builder": "grounding_dino", "version": BUILD_VERSION, "transformers": transformers.__version__}
    recipe.update(asdict(spec))
    return cached_build(
        spec.name, recipe, lambda folder: build_random_grounding_dino(spec, folder), cache_dir=cache_dir
    )
