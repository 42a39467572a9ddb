"""A Stable Diffusion at random init, built offline from a spec and cached in the diffusers layout.

The folder it writes is what `stable-diffusion-v1-5/stable-diffusion-v1-5` holds (`model_index.json`,
`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`), written by a stock
`StableDiffusionPipeline.save_pretrained`, so the tiny preset loads through exactly the
`from_pretrained(folder, subfolder=...)` calls a real base model takes, and a stock
`StableDiffusionPipeline.from_pretrained(folder)` loads it too. Its images are noise: only the
shapes, the code paths and the cost are real.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from cafe_vision.clip_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_LENGTH_TOKENS, VOCAB_SIZE, write_clip_tokenizer
from cafe_vision.model_cache import cached_build

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1
# SD 1.x's latent scale (diffusers' AutoencoderKL default) and its DDIM training schedule.
VAE_SCALING_FACTOR = 0.18215
SD_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


@dataclass(frozen=True)
class RandomDiffusionSpec:
    """The sizes of a random-init Stable Diffusion (UNet, VAE, CLIP text encoder; SD's real tokenizer).

    image_size_px: the default generation size; the UNet's `sample_size` is this over the VAE's scale.
    unet_block_channels: one entry per UNet resolution; as in SD every block but the deepest has
        cross-attention (plus the mid block).
    unet_heads: attention heads of every UNet transformer (SD 1.x calls this `attention_head_dim`).
    vae_block_channels: one entry per VAE resolution; the VAE downsamples by 2 ** (len - 1) (SD: 8).
    prediction_type: `epsilon` (SD 1.x, SD 2.1-base) or `v_prediction` (SD 2.1 at 768 px).
    """

    name: str
    image_size_px: int
    unet_block_channels: tuple[int, ...]
    unet_layers_per_block: int
    unet_heads: int
    cross_attention_dim: int
    vae_block_channels: tuple[int, ...]
    vae_layers_per_block: int
    norm_num_groups: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    prediction_type: str = "epsilon"
    seed: int = 0

    def __post_init__(self) -> None:
        vae_scale = 2 ** (len(self.vae_block_channels) - 1)
        if self.image_size_px % vae_scale:
            raise ValueError(f"spec {self.name!r}: image_size_px={self.image_size_px} is not divisible by {vae_scale}")
        if len(self.unet_block_channels) < 2:
            raise ValueError(f"spec {self.name!r}: unet_block_channels needs at least 2 entries (SD has 4)")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"spec {self.name!r}: prediction_type={self.prediction_type!r}; use epsilon or v_prediction"
            )
        if self.text_hidden_size != self.cross_attention_dim:
            # The UNet attends to the text encoder's last hidden state directly, as in SD.
            raise ValueError(
                f"spec {self.name!r}: text_hidden_size={self.text_hidden_size} must equal "
                f"cross_attention_dim={self.cross_attention_dim} (the UNet reads the text encoder's hidden states)"
            )


def diffusion_models(spec: RandomDiffusionSpec) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """The UNet, VAE and text encoder of `spec` at random init, drawn from torch's global RNG in that order.

    Built under `torch.device("meta")`, they have the shapes and the compute without the weights
    (bench/improve_flops.py counts their FLOPs so).
    """
    num_blocks = len(spec.unet_block_channels)
    vae_scale = 2 ** (len(spec.vae_block_channels) - 1)
    unet = UNet2DConditionModel(
        sample_size=spec.image_size_px // vae_scale,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * (num_blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (num_blocks - 1),
        block_out_channels=spec.unet_block_channels,
        layers_per_block=spec.unet_layers_per_block,
        attention_head_dim=spec.unet_heads,
        cross_attention_dim=spec.cross_attention_dim,
        norm_num_groups=spec.norm_num_groups,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec.vae_block_channels),
        up_block_types=("UpDecoderBlock2D",) * len(spec.vae_block_channels),
        block_out_channels=spec.vae_block_channels,
        layers_per_block=spec.vae_layers_per_block,
        latent_channels=4,
        norm_num_groups=spec.norm_num_groups,
        sample_size=spec.image_size_px,
        scaling_factor=VAE_SCALING_FACTOR,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=spec.text_hidden_size,
            intermediate_size=4 * spec.text_hidden_size,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=spec.text_heads,
            max_position_embeddings=MAX_LENGTH_TOKENS,
            projection_dim=spec.cross_attention_dim,
            bos_token_id=BOS_TOKEN_ID,
            # The pooled output is read at the eos id; transformers' default (2) predates CLIP's real ids.
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=EOS_TOKEN_ID,
        )
    )
    return unet.eval(), vae.eval(), text_encoder.eval()


def build_random_diffusion(spec: RandomDiffusionSpec, folder: Path) -> None:
    """Write a random-init Stable Diffusion into `folder` in the diffusers layout (deterministic in `spec.seed`)."""
    tokenizer = write_clip_tokenizer(folder / "_tokenizer")
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        unet, vae, text_encoder = diffusion_models(spec)
    scheduler = DDIMScheduler(**SD_SCHEDULE, prediction_type=spec.prediction_type)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)
    shutil.rmtree(folder / "_tokenizer")  # the scratch copy the processor was built from


def random_diffusion_folder(spec: RandomDiffusionSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the random Stable Diffusion `spec`, built on first use; load it like a hub SD folder."""
    recipe = {
        "builder": "stable-diffusion",
        "version": BUILD_VERSION,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        **asdict(spec),
    }
    return cached_build(spec.name, recipe, lambda folder: build_random_diffusion(spec, folder), cache_dir=cache_dir)
