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

Random models are built into the model cache (`$CAFE_MODEL_CACHE`, default `~/.cache/cafe/models`) on
first use and loaded back through the same `from_pretrained` calls as real weights. Real presets load
hub ids from the local Hugging Face cache; to use a local copy, `dataclasses.replace(preset, base=path)`.
`sd15-random` has the real compute cost with no weights (for GPU benchmarks); its images are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cafe_model.projector import LinearProjectorSpec, ProjectorSpec, ResamplerProjectorSpec
from cafe_model.random_diffusion import RandomDiffusionSpec, random_diffusion_folder
from cafe_model.random_reference_encoder import RandomReferenceEncoderSpec, random_reference_encoder_folder
from cafe_model.reference_encoder import FeatureKind

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
    """

    name: str
    base: str | RandomDiffusionSpec
    reference_encoder: str | RandomReferenceEncoderSpec
    reference_feature: FeatureKind
    projector: ProjectorSpec
    resolution_px: int

    def __post_init__(self) -> None:
        if self.resolution_px < 8 or self.resolution_px % 8:
            raise ValueError(
                f"preset {self.name!r}: resolution_px={self.resolution_px} must be a positive multiple of 8"
            )

    @property
    def is_random(self) -> bool:
        """True when any model is random-init (its images are noise)."""
        return isinstance(self.base, RandomDiffusionSpec) or isinstance(
            self.reference_encoder, RandomReferenceEncoderSpec
        )

    def base_source(self, *, cache_dir: str | Path | None = None) -> str:
        """The base model's hub id / folder, or the random one's cache folder (built if needed)."""
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
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`; raises ValueError listing the known names otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return preset
