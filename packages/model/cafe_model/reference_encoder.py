"""The frozen vision model that turns reference photos into the features the trainable projector reads.

Features, by `feature` kind:
- `image_embeds`: CLIP's projected image embedding, (batch, projection_dim): what IP-Adapter's linear
  `ImageProjModel` reads, and what stock diffusers feeds an `ImageProjection` (so the export loads there).
- `pooled`: DINOv2's pooled output (the layer-normed CLS token), (batch, hidden_size).
- `penultimate_tokens`: the hidden states of the second-to-last layer, (batch, tokens, hidden_size):
  what IP-Adapter Plus's perceiver resampler reads (patch tokens keep the detail a subject needs).

The "no reference" features used for classifier-free guidance and reference dropout follow stock
diffusers: zeros for the global kinds, and the encoding of an all-zero (normalized) pixel tensor for
the token kind. Training and sampling must use the same ones: call `null_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, CLIPVisionModelWithProjection, Dinov2Model

from cafe_vision.pretrained import load_pretrained

FeatureKind = Literal["image_embeds", "pooled", "penultimate_tokens"]
# Which feature kinds each architecture offers (CLIP's pooled output only reaches us projected).
FEATURES_BY_ARCHITECTURE: dict[str, tuple[FeatureKind, ...]] = {
    "clip": ("image_embeds", "penultimate_tokens"),
    "dinov2": ("pooled", "penultimate_tokens"),
}
# transformers' model_type -> our architecture name (`clip` is a full CLIP checkpoint such as
# openai/clip-vit-large-patch14; `clip_vision_model` is a vision tower saved alone).
ARCHITECTURE_BY_MODEL_TYPE = {"clip": "clip", "clip_vision_model": "clip", "dinov2": "dinov2"}


def reference_to_rgb(image: Image.Image, background_rgb: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """An RGB reference: a cut-out with alpha (the shards' `reference.png`) is laid on `background_rgb`.

    A plain `convert("RGB")` would keep the colours under the transparent pixels, which are the
    photo's original background: the subject would come with its old scene.
    """
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background_rgb, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


class ReferenceEncoder(nn.Module):
    """A frozen transformers vision model (CLIP vision or DINOv2) and its image processor.

    `preprocess(images)` gives pixels, `forward(pixels)` the features of kind `feature`.
    Its parameters never require grad and it stays in eval mode (only the projector trains).
    """

    def __init__(self, vision_model: nn.Module, image_processor: object, *, architecture: str, feature: FeatureKind):
        super().__init__()
        allowed = FEATURES_BY_ARCHITECTURE.get(architecture)
        if allowed is None:
            raise ValueError(
                f"architecture={architecture!r} is not supported; use one of {sorted(FEATURES_BY_ARCHITECTURE)}"
            )
        if feature not in allowed:
            raise ValueError(f"a {architecture} reference encoder gives features {allowed}, not feature={feature!r}")
        self.vision_model = vision_model
        self.image_processor = image_processor
        self.architecture = architecture
        self.feature: FeatureKind = feature
        self._input_size_px: tuple[int, int] | None = None
        self.vision_model.requires_grad_(False)
        self.vision_model.eval()

    @classmethod
    def from_pretrained(
        cls, source: str | Path, *, feature: FeatureKind, dtype: torch.dtype = torch.float32
    ) -> ReferenceEncoder:
        """Load a hub id or a local folder: CLIP as `CLIPVisionModelWithProjection`, DINOv2 as `Dinov2Model`."""
        config = load_pretrained(AutoConfig.from_pretrained, source)
        architecture = ARCHITECTURE_BY_MODEL_TYPE.get(config.model_type)
        if architecture is None:
            raise ValueError(
                f"{str(source)!r} is a {config.model_type!r} model; a reference encoder must be one of "
                f"{sorted(ARCHITECTURE_BY_MODEL_TYPE)} (CLIP vision or DINOv2)"
            )
        model_class = CLIPVisionModelWithProjection if architecture == "clip" else Dinov2Model
        vision_model = load_pretrained(model_class.from_pretrained, source, dtype=dtype)
        image_processor = load_pretrained(AutoImageProcessor.from_pretrained, source)
        return cls(vision_model, image_processor, architecture=architecture, feature=feature)

    def train(self, mode: bool = True) -> ReferenceEncoder:
        """Stays in eval mode: the encoder is frozen, and its features must not depend on the module's mode."""
        super().train(False)
        return self

    @property
    def input_size_px(self) -> tuple[int, int]:
        """(height, width) of the pixels `preprocess` makes (its crop; not the config's `image_size`, which for
        DINOv2 is the 518 px of its positional embeddings while its processor crops 224)."""
        if self._input_size_px is None:
            pixels = self.image_processor(images=[Image.new("RGB", (64, 64))], return_tensors="pt").pixel_values
            self._input_size_px = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        return self._input_size_px

    @property
    def feature_dim(self) -> int:
        """The last dimension of the features (what the projector's input must be)."""
        config = self.vision_model.config
        if self.feature == "image_embeds":
            return int(config.projection_dim)
        return int(config.hidden_size)

    @property
    def is_token_feature(self) -> bool:
        """True when features are (batch, tokens, dim), False when (batch, dim)."""
        return self.feature == "penultimate_tokens"

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Pixels (batch, 3, *input_size_px) for `forward`, from PIL images (cut-outs laid on white first)."""
        if not images:
            raise ValueError("preprocess needs at least one reference image")
        rgb = [reference_to_rgb(image) for image in images]
        pixels = self.image_processor(images=rgb, return_tensors="pt").pixel_values
        parameter = next(self.vision_model.parameters())
        return pixels.to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of kind `self.feature`: (batch, dim) or (batch, tokens, dim)."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (batch, 3, height, width); got shape {tuple(pixels.shape)}")
        if self.feature == "penultimate_tokens":
            return self.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        output = self.vision_model(pixel_values=pixels)
        if self.feature == "image_embeds":
            return output.image_embeds
        return output.pooler_output

    @torch.no_grad()
    def null_features(self, batch_size: int) -> torch.Tensor:
        """The features of "no reference", as stock diffusers makes them for classifier-free guidance.

        Zeros for the global kinds; for tokens, the encoding of an all-zero pixel tensor (what IP-Adapter
        Plus and diffusers use: zero tokens would not be what the resampler saw when trained).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; it must be at least 1")
        parameter = next(self.vision_model.parameters())
        if not self.is_token_feature:
            return torch.zeros(batch_size, self.feature_dim, device=parameter.device, dtype=parameter.dtype)
        zeros = torch.zeros(1, 3, *self.input_size_px, device=parameter.device, dtype=parameter.dtype)
        return self.forward(zeros).expand(batch_size, -1, -1).clone()
