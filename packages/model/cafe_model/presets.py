"""Model presets: the base diffusion model, the reference encoder and the projector of a customization model.

| preset | base | reference encoder (features) | projector |
|---|---|---|---|
| `tiny` | random SD, 64 px | random CLIP vision (image_embeds) | linear, 4 tokens (stock layout) |
| `tiny-dinov2` | random SD, 64 px | random DINOv2 (penultimate tokens) | resampler, 4 tokens |
| `sd15` | `stable-diffusion-v1-5/stable-diffusion-v1-5`, 512 px | `openai/clip-vit-large-patch14` | linear, 4 |
| `sd15-dinov2` | same | `facebook/dinov2-base` (penultimate tokens) | resampler, 16 tokens |
| `sd21` | `stabilityai/stable-diffusion-2-1`, 768 px, v-prediction | `openai/clip-vit-large-patch14` | linear, 4 |
| `sd21-dinov2` | same | `facebook/dinov2-base` (penultimate tokens) | resampler, 16 tokens |
| `sd15-random` | SD 1.5's architecture, random init, 512 px | CLIP ViT-L/14's architecture, random | linear, 4 |
| `toy` | small SD, 32 px, VAE trained on toy images | random CLIP vision (penultimate tokens) | resampler, 8 |

Random models are built into the model cache (`$CAFE_MODEL_CACHE`, default `~/.cache/cafe/models`) on
first use and loaded back through the same `from_pretrained` calls as real weights. Real presets load
hub ids from the local Hugging Face cache; to use a local copy, `dataclasses.replace(preset, base=path)`.
`sd15-random` has the real compute cost with no weights (for GPU benchmarks); its images are noise.

What trains (`trainable`): "adapter", the projector and the reference key/value projections (IP-Adapter's
recipe, the base model frozen), for every preset but `toy`. The toy preset's UNet is random, so it has to
learn to draw as well: "unet" trains the whole UNet beside the adapter. Its reference encoder stays a
frozen random vision model, a fixed random map of the reference's pixels that the resampler learns to
read; the toy world (`cafe_core.toy`, `cafe data toy`) is what it trains on and the `toy` scorers what
measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from cafe_model.projector import LinearProjectorSpec, ProjectorSpec, ResamplerProjectorSpec
from cafe_model.random_diffusion import RandomDiffusionSpec, random_diffusion_folder
from cafe_model.random_reference_encoder import RandomReferenceEncoderSpec, random_reference_encoder_folder
from cafe_model.reference_encoder import FeatureKind
from cafe_model.toy_base import ToyBaseSpec, toy_base_folder

Trainable = Literal["adapter", "unet"]

SD15_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the current id of runwayml/stable-diffusion-v1-5
SD21_HUB_ID = "stabilityai/stable-diffusion-2-1"
CLIP_VIT_L14_HUB_ID = "openai/clip-vit-large-patch14"
DINOV2_BASE_HUB_ID = "facebook/dinov2-base"


@dataclass(frozen=True)
class ModelPreset:
    """The models of a customization model.

    base: a Stable Diffusion folder in the diffusers layout (hub id or local path), or a random one built on first use.
    reference_encoder: a CLIP vision / DINOv2 hub id or local folder, or a random one built on first use.
    reference_feature: which features of the encoder the projector reads (see `reference_encoder`).
    projector: the trainable projector's shape.
    resolution_px: the side the base model was trained at (the default generation and training size).
    trainable: "adapter" (projector + reference k/v) or "unet" (the whole UNet too); see the module docstring.
    """

    name: str
    base: str | RandomDiffusionSpec | ToyBaseSpec
    reference_encoder: str | RandomReferenceEncoderSpec
    reference_feature: FeatureKind
    projector: ProjectorSpec
    resolution_px: int
    trainable: Trainable = "adapter"

    def __post_init__(self) -> None:
        if self.resolution_px < 8 or self.resolution_px % 8:
            raise ValueError(
                f"preset {self.name!r}: resolution_px={self.resolution_px} must be a positive multiple of 8"
            )
        if self.trainable not in get_args(Trainable):
            raise ValueError(
                f"preset {self.name!r}: trainable={self.trainable!r}; choose one of {', '.join(get_args(Trainable))}"
            )

    @property
    def is_toy(self) -> bool:
        """True for a preset built for the toy world (its base's VAE is trained on toy renderings)."""
        return isinstance(self.base, ToyBaseSpec)

    @property
    def is_random(self) -> bool:
        """True when a model is random-init and training cannot make its images mean anything (noise).

        A toy preset is not: its random UNet trains, and its random reference encoder is a fixed map of
        the reference's pixels that the projector learns to read.
        """
        if self.is_toy:
            return False
        return isinstance(self.base, RandomDiffusionSpec) or isinstance(
            self.reference_encoder, RandomReferenceEncoderSpec
        )

    @property
    def default_scorers(self) -> str:
        """The scorer preset that measures this preset's images: "toy", "tiny" (random models) or "base"."""
        if self.is_toy:
            return "toy"
        return "tiny" if self.is_random else "base"

    def base_source(self, *, cache_dir: str | Path | None = None) -> str:
        """The base model's hub id / folder, or the built one's cache folder (built, or trained, if needed)."""
        if isinstance(self.base, ToyBaseSpec):
            return str(toy_base_folder(self.base, cache_dir=cache_dir))
        if isinstance(self.base, RandomDiffusionSpec):
            return str(random_diffusion_folder(self.base, cache_dir=cache_dir))
        return self.base

    def reference_encoder_source(self, *, cache_dir: str | Path | None = None) -> str:
        """The reference encoder's hub id / folder, or the random one's cache folder (built if needed)."""
        if isinstance(self.reference_encoder, RandomReferenceEncoderSpec):
            return str(random_reference_encoder_folder(self.reference_encoder, cache_dir=cache_dir))
        return self.reference_encoder


TINY_DIFFUSION = RandomDiffusionSpec(
    name="sd-tiny-random",
    image_size_px=64,
    unet_block_channels=(32, 64),
    unet_layers_per_block=1,
    unet_heads=2,
    cross_attention_dim=32,
    # Four VAE levels: the real 8x latent scale, so sizes behave as with SD.
    vae_block_channels=(16, 16, 16, 16),
    vae_layers_per_block=1,
    norm_num_groups=8,
    text_hidden_size=32,
    text_layers=2,
    text_heads=2,
)
TINY_CLIP_VISION = RandomReferenceEncoderSpec(
    name="clip-vision-tiny-random",
    architecture="clip",
    image_size_px=32,
    patch_size_px=8,
    hidden_size=32,
    layers=2,
    heads=2,
    projection_dim=32,
)
TINY_DINOV2 = RandomReferenceEncoderSpec(
    name="dinov2-tiny-random",
    architecture="dinov2",
    image_size_px=32,
    patch_size_px=8,
    hidden_size=32,
    layers=2,
    heads=2,
    projection_dim=32,
)
# Stable Diffusion 1.5's and CLIP ViT-L/14's architectures (sizes from their hub configs).
SD15_ARCHITECTURE = RandomDiffusionSpec(
    name="sd15-random",
    image_size_px=512,
    unet_block_channels=(320, 640, 1280, 1280),
    unet_layers_per_block=2,
    unet_heads=8,
    cross_attention_dim=768,
    vae_block_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    norm_num_groups=32,
    text_hidden_size=768,
    text_layers=12,
    text_heads=12,
)
CLIP_VIT_L14_ARCHITECTURE = RandomReferenceEncoderSpec(
    name="clip-vit-l-14-random",
    architecture="clip",
    image_size_px=224,
    patch_size_px=14,
    hidden_size=1024,
    layers=24,
    heads=16,
    projection_dim=768,
)
# The toy preset: 32 px, two VAE levels (a 16x16 latent; three lost the patterns' stripes and dots).
# Trained 1000 steps, the VAE's round trip keeps what the toy classifier reads: shape 0.98, colour 0.97,
# pattern 0.74, background and position 1.0 (of 300 fresh renderings): the ceiling of toy identity.
TOY_BASE = ToyBaseSpec(
    diffusion=RandomDiffusionSpec(
        name="sd-toy",
        image_size_px=32,
        unet_block_channels=(32, 64),
        unet_layers_per_block=1,
        unet_heads=4,
        cross_attention_dim=32,
        vae_block_channels=(16, 32),
        vae_layers_per_block=1,
        norm_num_groups=8,
        text_hidden_size=32,
        text_layers=2,
        text_heads=2,
    )
)
TOY_CLIP_VISION = RandomReferenceEncoderSpec(
    name="clip-vision-toy-random",
    architecture="clip",
    image_size_px=32,
    patch_size_px=4,
    hidden_size=64,
    layers=2,
    heads=4,
    projection_dim=32,
)
# IP-Adapter Plus's resampler at SD 1.5 width (its depth, heads and head size), with 16 queries.
DINOV2_RESAMPLER = ResamplerProjectorSpec(num_tokens=16, hidden_dim=768, depth=4, heads=12, dim_head=64)

PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        ModelPreset(
            name="tiny",
            base=TINY_DIFFUSION,
            reference_encoder=TINY_CLIP_VISION,
            reference_feature="image_embeds",
            projector=LinearProjectorSpec(num_tokens=4),
            resolution_px=64,
        ),
        ModelPreset(
            name="tiny-dinov2",
            base=TINY_DIFFUSION,
            reference_encoder=TINY_DINOV2,
            reference_feature="penultimate_tokens",
            projector=ResamplerProjectorSpec(num_tokens=4, hidden_dim=32, depth=1, heads=2, dim_head=16),
            resolution_px=64,
        ),
        ModelPreset(
            name="sd15",
            base=SD15_HUB_ID,
            reference_encoder=CLIP_VIT_L14_HUB_ID,
            reference_feature="image_embeds",
            projector=LinearProjectorSpec(num_tokens=4),
            resolution_px=512,
        ),
        ModelPreset(
            name="sd15-dinov2",
            base=SD15_HUB_ID,
            reference_encoder=DINOV2_BASE_HUB_ID,
            reference_feature="penultimate_tokens",
            projector=DINOV2_RESAMPLER,
            resolution_px=512,
        ),
        ModelPreset(
            name="sd21",
            base=SD21_HUB_ID,
            reference_encoder=CLIP_VIT_L14_HUB_ID,
            reference_feature="image_embeds",
            projector=LinearProjectorSpec(num_tokens=4),
            resolution_px=768,
        ),
        ModelPreset(
            name="sd21-dinov2",
            base=SD21_HUB_ID,
            reference_encoder=DINOV2_BASE_HUB_ID,
            reference_feature="penultimate_tokens",
            projector=DINOV2_RESAMPLER,
            resolution_px=768,
        ),
        ModelPreset(
            name="sd15-random",
            base=SD15_ARCHITECTURE,
            reference_encoder=CLIP_VIT_L14_ARCHITECTURE,
            reference_feature="image_embeds",
            projector=LinearProjectorSpec(num_tokens=4),
            resolution_px=512,
        ),
        ModelPreset(
            name="toy",
            base=TOY_BASE,
            reference_encoder=TOY_CLIP_VISION,
            reference_feature="penultimate_tokens",
            projector=ResamplerProjectorSpec(num_tokens=8, hidden_dim=64, depth=1, heads=4, dim_head=16),
            resolution_px=32,
            trainable="unet",
        ),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`; raises ValueError listing the known names otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return preset
