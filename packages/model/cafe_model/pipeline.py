"""`CustomizationPipeline`: one reference photo and a prompt in, images of the subject in a new scene out.

    pipeline = load_pipeline("tiny")
    images = pipeline(reference, "a photo of the dog on a beach", num_steps=30, seed=0)
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)   # any diffusers sampler

The sampling loop is Stable Diffusion's (diffusers' `StableDiffusionPipeline.__call__`: same prompt
encoding, latent noise from one CPU generator, `scale_model_input`, `scheduler.step`, VAE decode and
post-processing), with the two-condition guidance of `cafe_model.guidance`. With
`text_guidance == reference_guidance` it computes what a stock pipeline with the exported IP-Adapter
computes, so the two give the same images.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import DDIMScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from cafe_model.customization_model import CustomizationModel
from cafe_model.guidance import Branch, combine_guidance, guidance_branches

# Stable Diffusion pipelines require sizes divisible by 8 (the VAE's latent scale).
SIZE_MULTIPLE_PX = 8


def check_size_px(name: str, value: int, multiple: int = SIZE_MULTIPLE_PX) -> None:
    """Raise ValueError unless `value` is a positive multiple of `multiple`, naming the nearest valid sizes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an int (pixels)")
    if value < multiple or value % multiple:
        lower = max(multiple, value // multiple * multiple)
        raise ValueError(f"{name}={value} is not a positive multiple of {multiple}; use {lower} or {lower + multiple}")


class CustomizationPipeline:
    """Generation with a `CustomizationModel` and any diffusers scheduler (DDIM from the base's schedule by default)."""

    def __init__(self, model: CustomizationModel, scheduler: SchedulerMixin | None = None):
        self.model = model
        self.scheduler = scheduler if scheduler is not None else DDIMScheduler.from_config(model.scheduler_config)
        self.image_processor = VaeImageProcessor(vae_scale_factor=model.vae_scale_factor)

    @property
    def scheduler(self) -> SchedulerMixin:
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler: SchedulerMixin) -> None:
        if not (hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "step")):
            raise TypeError(
                f"{type(scheduler).__name__} is not a diffusers scheduler; use e.g. "
                "DDIMScheduler.from_config(pipeline.scheduler.config)"
            )
        self._scheduler = scheduler

    def to(self, device: str | torch.device) -> CustomizationPipeline:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(
        self,
        reference_image: Image.Image | None,
        prompt: str,
        *,
        negative_prompt: str = "",
        num_steps: int = 30,
        text_guidance: float = 7.5,
        reference_guidance: float = 7.5,
        reference_scale: float = 1.0,
        seed: int = 0,
        height_px: int | None = None,
        width_px: int | None = None,
        batch_size: int = 1,
        eta: float = 0.0,
    ) -> list[Image.Image]:
        """`batch_size` RGB images of `height_px` x `width_px` (default: the base model's resolution).

        reference_image: the subject (an RGBA cut-out is laid on white); None: the null reference, the
            "no reference" that reference dropout trains (text only, as the model learned it; unlike
            reference_scale=0, which removes the reference attention the model was trained with).
        text_guidance / reference_guidance: the guidance scales of `cafe_model.guidance` (equal = stock CFG).
        reference_scale: the weight of the reference attention (0 = text only).
        seed: the same seed, settings and scheduler give the same images (noise comes from a CPU generator).
        eta: DDIM's stochasticity (passed to schedulers whose `step` takes it).
        Raises ValueError for a size not divisible by 8, a batch below 1, fewer than 1 step or a bad scale.
        """
        model = self.model
        height_px = model.default_size_px if height_px is None else height_px
        width_px = model.default_size_px if width_px is None else width_px
        check_size_px("height_px", height_px)
        check_size_px("width_px", width_px)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}; it must be an int >= 1")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps={num_steps!r}; it must be an int >= 1")
        if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
            raise TypeError("prompt and negative_prompt are strings (batch_size makes several images of one prompt)")
        if reference_image is not None and not isinstance(reference_image, Image.Image):
            raise TypeError(f"reference_image must be a PIL image or None, not {type(reference_image).__name__}")
        branches = guidance_branches(text_guidance, reference_guidance)
        device = model.device

        text = model.encode_text(model.tokenize([prompt])).repeat(batch_size, 1, 1)
        if reference_image is None:
            reference = model.reference_encoder.null_features(batch_size)
        else:
            reference = model.encode_reference(model.reference_encoder.preprocess([reference_image]))
            reference = reference.repeat_interleave(batch_size, dim=0)
        text_by_branch: dict[Branch, torch.Tensor] = {"text_and_ref": text}
        reference_by_branch: dict[Branch, torch.Tensor] = {"text_and_ref": reference, "ref_only": reference}
        if len(branches) > 1:
            negative = model.encode_text(model.tokenize([negative_prompt])).repeat(batch_size, 1, 1)
            text_by_branch["uncond"] = text_by_branch["ref_only"] = negative
            reference_by_branch["uncond"] = model.reference_encoder.null_features(batch_size)
        text_batch = torch.cat([text_by_branch[branch] for branch in branches])
        reference_batch = torch.cat([reference_by_branch[branch] for branch in branches])

        self.scheduler.set_timesteps(num_steps, device=device)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        latent_shape = (
            batch_size,
            model.unet.config.in_channels,
            height_px // model.vae_scale_factor,
            width_px // model.vae_scale_factor,
        )
        latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=text.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator, eta)

        for timestep in self.scheduler.timesteps:
            latent_input = torch.cat([latents] * len(branches))
            latent_input = self.scheduler.scale_model_input(latent_input, timestep)
            prediction = model(latent_input, timestep, text_batch, reference_batch, reference_scale=reference_scale)
            predictions = dict(zip(branches, prediction.chunk(len(branches)), strict=True))
            guided = combine_guidance(predictions, text_guidance=text_guidance, reference_guidance=reference_guidance)
            latents = self.scheduler.step(guided, timestep, latents, **step_kwargs, return_dict=False)[0]

        pixels = model.vae.decode(latents / model.vae.config.scaling_factor, return_dict=False)[0]
        return self.image_processor.postprocess(pixels, output_type="pil", do_denormalize=[True] * batch_size)

    def _step_kwargs(self, generator: torch.Generator, eta: float) -> dict[str, object]:
        """`eta` and `generator` for the schedulers whose `step` takes them (as diffusers' pipelines do)."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, object] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs
