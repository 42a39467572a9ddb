"""The toy preset's base model: a small Stable Diffusion whose VAE is trained on toy-world renderings.

A random VAE's latents are a fixed random projection of the pixels, and its decoder draws noise from
any latent, so a UNet trained on them could never be judged by what it draws. This builder starts
from `build_random_diffusion` (the same diffusers layout, tokenizer and scheduler) and trains only the
VAE, for `vae_steps` steps of AdamW (one-cycle schedule) on L1 + MSE reconstruction plus a small KL
term, on fresh renderings of
every toy subject in every scene (`cafe_core.toy.render`). Nothing of the held-out split leaks into
what the customization model learns: the VAE only learns to encode and decode toy pixels, as SD's VAE
was trained on images of everything. The UNet and the text encoder stay random; training the toy
preset trains them (its `trainable` is "unet").

The latent scale is measured, not assumed: `scaling_factor` is set to 1 / (the latents' std over a
batch), so the scaled latents have unit variance as SD 1.x's 0.18215 gives its own VAE. The folder
goes through `cached_build` like every random model, so the training runs once per machine (about
five minutes on two cores) and the folder loads through the stock `from_pretrained` calls.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL

from cafe_core.toy import all_scenes, all_subjects, render
from cafe_model.random_diffusion import BUILD_VERSION, RandomDiffusionSpec, build_random_diffusion
from cafe_vision.model_cache import cached_build

# Bump when the VAE's training changes in a way the spec does not capture: it is part of the cache key.
TOY_BUILD_VERSION = 1


@dataclass(frozen=True)
class ToyBaseSpec:
    """A random Stable Diffusion (`diffusion`) whose VAE is then trained on toy renderings.

    vae_steps, vae_batch, vae_learning_rate: the VAE's AdamW training; vae_kl_weight: the weight of the
    KL term beside the L1 reconstruction (small: the latents must keep the patterns); seed: the draws
    of the training renderings and the VAE's sampling (the diffusion spec has its own init seed).
    """

    diffusion: RandomDiffusionSpec
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_learning_rate: float = 3e-3
    vae_kl_weight: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vae_steps", "vae_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"toy base {self.name!r}: {name}={getattr(self, name)} must be at least 1")

    @property
    def name(self) -> str:
        return self.diffusion.name

    @property
    def image_size_px(self) -> int:
        return self.diffusion.image_size_px


def toy_batch(count: int, size_px: int, rng: np.random.Generator) -> torch.Tensor:
    """(count, 3, size, size) renderings in [-1, 1] of random subjects in random scenes (all of the world)."""
    subjects, scenes = all_subjects(), all_scenes()
    images = []
    for _ in range(count):
        subject = subjects[rng.integers(len(subjects))]
        scene = scenes[rng.integers(len(scenes))]
        images.append(render(subject, scene, size_px=size_px, seed=int(rng.integers(2**31))).image)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def train_toy_vae(vae: AutoencoderKL, spec: ToyBaseSpec) -> float:
    """Train `vae` in place (see the module docstring); returns the std of its latents on a fresh batch."""
    rng = np.random.default_rng(spec.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=spec.vae_learning_rate, weight_decay=0.0)
    # One-cycle: a short warm-up to a high rate, then annealing; it halves the L1 that a constant rate
    # reaches in the same steps. L1 keeps edges sharp, MSE pulls the flat colours exact.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.vae_learning_rate, total_steps=spec.vae_steps, pct_start=0.05
    )
    vae.train()
    for _ in range(spec.vae_steps):
        pixels = toy_batch(spec.vae_batch, spec.image_size_px, rng)
        posterior = vae.encode(pixels).latent_dist
        error = vae.decode(posterior.sample()).sample - pixels
        loss = error.abs().mean() + error.square().mean() + spec.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    vae.eval()
    with torch.no_grad():
        return float(vae.encode(toy_batch(4 * spec.vae_batch, spec.image_size_px, rng)).latent_dist.mean.std())


def build_toy_base(spec: ToyBaseSpec, folder: Path) -> None:
    """Write the random Stable Diffusion of `spec.diffusion` into `folder`, then replace its VAE by a trained one."""
    build_random_diffusion(spec.diffusion, folder)
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        latent_std = train_toy_vae(vae, spec)
    vae.register_to_config(scaling_factor=1.0 / latent_std)
    shutil.rmtree(folder / "vae")
    vae.save_pretrained(folder / "vae")


def toy_base_folder(spec: ToyBaseSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the toy base `spec`, trained on first use; load it like a hub SD folder."""
    recipe = {
        "builder": "toy-stable-diffusion",
        "version": TOY_BUILD_VERSION,
        "random_build_version": BUILD_VERSION,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        **asdict(spec),
    }
    return cached_build(spec.name, recipe, lambda folder: build_toy_base(spec, folder), cache_dir=cache_dir)
