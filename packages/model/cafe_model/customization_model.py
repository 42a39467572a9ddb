"""The customization model: Stable Diffusion plus a reference encoder steering it through decoupled cross-attention.

Frozen: the text encoder, the VAE, the base UNet and the reference encoder. Trainable: the projector
(reference features -> reference tokens) and the reference key/value projections of every
cross-attention layer; with `train_unet=True` (the toy preset, whose base UNet is random and has to
learn to draw) every UNet parameter too. A training step is

    latents  = model.encode_latents(target_pixels)                  # frozen VAE, scaled
    text     = model.encode_text(model.tokenize(prompts))            # frozen CLIP text encoder
    features = model.encode_reference(reference_pixels)              # frozen vision model
    features = torch.where(drop[:, None], model.reference_encoder.null_features(n), features)  # ref dropout
    noise_pred = model(noisy_latents, timesteps, text, features)     # projector + UNet, the graph that trains

and only `model.trainable_parameters()` go to the optimizer and `model.trainable_state_dict()` to a
checkpoint. `forward` is the noise prediction so that `accelerate.prepare(model)` / DDP wrap the part
that has gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from cafe_model.decoupled_attention import (
    add_decoupled_cross_attention,
    reference_processors,
    reference_projector,
)
from cafe_model.projector import LinearProjectorSpec, ProjectorSpec, build_projector
from cafe_model.reference_encoder import ReferenceEncoder

# Prefixes of the trainable parameters in `named_parameters()` (the processors are Attention submodules).
PROJECTOR_PREFIX = "unet.encoder_hid_proj."
UNET_PREFIX = "unet."
REFERENCE_KV_MARKERS = (".processor.to_k_ip.", ".processor.to_v_ip.")


class CustomizationModel(nn.Module):
    """SD components + a frozen `ReferenceEncoder` + a trainable projector and reference k/v in the UNet.

    Build it with `cafe_model.load.load_model(preset)`; the constructor takes loaded components and
    modifies `unet` in place (adds the reference attention and the projector).
    `scheduler_config` is the base model's noise-schedule config (for `DDPMScheduler.from_config` in
    training and any sampler in the pipeline). `preset_name` is recorded in exports. `train_unet`: the
    whole UNet trains (and is saved in checkpoints) beside the projector and the reference k/v.
    """

    def __init__(
        self,
        *,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        reference_encoder: ReferenceEncoder,
        projector_spec: ProjectorSpec,
        scheduler_config: Mapping[str, Any],
        preset_name: str | None = None,
        train_unet: bool = False,
    ):
        super().__init__()
        wants_tokens = not isinstance(projector_spec, LinearProjectorSpec)
        if wants_tokens != reference_encoder.is_token_feature:
            needed = "penultimate_tokens" if wants_tokens else "image_embeds (CLIP) or pooled (DINOv2)"
            raise ValueError(
                f"a {type(projector_spec).__name__} reads {needed} features, but the reference encoder gives "
                f"{reference_encoder.feature!r}; pair a linear projector with global features and a resampler "
                "with tokens"
            )
        text_width = text_encoder.config.hidden_size
        if text_width != unet.config.cross_attention_dim:
            raise ValueError(
                f"the text encoder's hidden size ({text_width}) is not the UNet's cross_attention_dim "
                f"({unet.config.cross_attention_dim}); the text encoder and UNet come from different base models"
            )
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vae = vae
        self.unet = unet
        self.reference_encoder = reference_encoder
        self.projector_spec = projector_spec
        self.scheduler_config = dict(scheduler_config)
        self.preset_name = preset_name
        self.train_unet = train_unet
        projector = build_projector(
            projector_spec,
            feature_dim=reference_encoder.feature_dim,
            cross_attention_dim=unet.config.cross_attention_dim,
        )
        add_decoupled_cross_attention(unet, projector, num_tokens=projector_spec.num_tokens)
        # Kept in a plain list (not registered twice): setting the scale per call must not walk every
        # module of the UNet, as `unet.attn_processors` does.
        self._reference_attention = [processor for _, processor in reference_processors(unet)]
        self.requires_grad_(False)
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(True)
        self.train(False)

    # ---- the trainable-parameter API -------------------------------------------------------------

    def named_trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Projector and reference k/v parameters (every UNet parameter with `train_unet`) by name,
        whatever their `requires_grad` is now."""
        return {
            name: parameter
            for name, parameter in self.named_parameters()
            if name.startswith(PROJECTOR_PREFIX)
            or any(marker in name for marker in REFERENCE_KV_MARKERS)
            or (self.train_unet and name.startswith(UNET_PREFIX))
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (projector + to_k_ip/to_v_ip of every cross-attention layer)."""
        return list(self.named_trainable_parameters().values())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (detached, not copied) by `named_parameters` name: what a checkpoint saves."""
        return {name: parameter.detach() for name, parameter in self.named_trainable_parameters().items()}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy `state` (from `trainable_state_dict`) into the trainable parameters; names and shapes must match."""
        parameters = self.named_trainable_parameters()
        missing = sorted(set(parameters) - set(state))
        unexpected = sorted(set(state) - set(parameters))
        if missing or unexpected:
            raise ValueError(
                f"trainable state does not fit this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (was it saved from another preset?)"
            )
        with torch.no_grad():
            for name, parameter in parameters.items():
                if state[name].shape != parameter.shape:
                    raise ValueError(
                        f"{name}: saved shape {tuple(state[name].shape)} != model {tuple(parameter.shape)}"
                    )
                parameter.copy_(state[name])

    def train(self, mode: bool = True) -> CustomizationModel:
        """Frozen parts stay in eval mode; the UNet follows `mode` (gradient checkpointing needs it)."""
        super().train(mode)
        self.text_encoder.train(False)
        self.vae.train(False)
        self.reference_encoder.train(False)
        return self

    # ---- properties ------------------------------------------------------------------------------

    # diffusers' ModelMixin.device / .dtype walk every submodule on each call (about 1 ms for SD's UNet),
    # and the training step asks several times: the first parameter answers the same.
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size_px(self) -> int:
        """The side the UNet was built for (`sample_size` latents)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def num_reference_tokens(self) -> int:
        return self.projector_spec.num_tokens

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    # ---- encoders (frozen) -----------------------------------------------------------------------

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompt ids (batch, model_max_length), padded and truncated as Stable Diffusion pipelines do."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not one string")
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    @torch.no_grad()
    def encode_text(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Text tokens (batch, length, cross_attention_dim): the text encoder's last hidden state, as in SD."""
        return self.text_encoder(prompt_ids.to(self.text_encoder.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode_reference(self, pixels: torch.Tensor) -> torch.Tensor:
        """Reference features from `reference_encoder.preprocess` pixels."""
        return self.reference_encoder(pixels)

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scaled latents of images in [-1, 1], (batch, 3, H, W) -> (batch, 4, H/8, W/8), sampled from the VAE."""
        latent_dist = self.vae.encode(pixels.to(next(self.vae.parameters()))).latent_dist
        return latent_dist.sample(generator) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in about [-1, 1] from scaled latents."""
        return self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]

    # ---- the trainable graph ---------------------------------------------------------------------

    def reference_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """Reference tokens (batch, num_tokens, cross_attention_dim) from reference features."""
        return reference_projector(self.unet)(features)

    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_tokens: torch.Tensor,
        reference_features: torch.Tensor,
        *,
        reference_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's prediction (noise, or v for v-prediction bases) given text tokens and reference features.

        `reference_scale` weights the reference attention for this call (0 gives the text-only UNet).
        """
        if reference_features.shape[0] != noisy_latents.shape[0]:
            raise ValueError(
                f"{reference_features.shape[0]} reference features for {noisy_latents.shape[0]} latents; "
                "give one reference per sample"
            )
        for processor in self._reference_attention:
            processor.scale = [float(reference_scale)]
        # One adapter, one reference image per sample: (batch, 1, ...), the layout diffusers' pipelines pass.
        image_embeds = [reference_features.unsqueeze(1).to(self.dtype)]
        return self.unet(
            noisy_latents,
            timesteps,
            encoder_hidden_states=text_tokens,
            added_cond_kwargs={"image_embeds": image_embeds},
            return_dict=False,
        )[0]

    def reference_key_value_pairs(self) -> list[tuple[str, nn.Linear, nn.Linear]]:
        """(processor name, to_k_ip, to_v_ip) per cross-attention layer, in stock key order (for export and tests)."""
        return [
            (name, processor.to_k_ip[0], processor.to_v_ip[0]) for name, processor in reference_processors(self.unet)
        ]
