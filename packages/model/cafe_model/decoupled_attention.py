"""Decoupled cross-attention (IP-Adapter) in a diffusers `UNet2DConditionModel`, with diffusers' own machinery.

Every cross-attention layer gets diffusers' `IPAdapterAttnProcessor2_0`: the text tokens go through
the layer's own `to_k`/`to_v`, the reference tokens through new `to_k_ip`/`to_v_ip`, and the two
attention outputs are summed, the reference one times a scale:

    out = Attn(q, K_text, V_text) + scale * Attn(q, K_ref, V_ref)

`to_k_ip`/`to_v_ip` start as copies of `to_k`/`to_v` (the reference tokens live in the text tokens'
space, so the copy is a better start than random). The projector is installed as
`unet.encoder_hid_proj = MultiIPAdapterImageProjection([projector])`, so the UNet projects the
reference features itself from `added_cond_kwargs={"image_embeds": [features]}`: the same code path
a stock pipeline runs after `load_ip_adapter`, which is what makes the export reproduce our images.

At scale 0 the processor skips the reference branch: the UNet computes exactly its text-only output.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import MultiIPAdapterImageProjection
from torch import nn

SELF_ATTENTION_SUFFIX = "attn1.processor"
# A resampler projector has attention layers of its own; once installed they show up in
# `unet.attn_processors` too, but they are not the UNet's (stock diffusers never counts them).
PROJECTOR_MODULE_PREFIX = "encoder_hid_proj."


def _gets_reference_tokens(processor_name: str) -> bool:
    return not processor_name.endswith(SELF_ATTENTION_SUFFIX) and not processor_name.startswith(PROJECTOR_MODULE_PREFIX)


def cross_attention_processor_names(unet: UNet2DConditionModel) -> list[str]:
    """The processor names that get reference tokens, in `unet.attn_processors` order.

    The order and the rule (every processor not named `attn1`) are those of diffusers'
    `_convert_ip_adapter_attn_to_diffusers`: the k-th name here is stock key id 2k + 1.
    """
    return [name for name in unet.attn_processors if _gets_reference_tokens(name)]


def _attention_of(unet: UNet2DConditionModel, processor_name: str) -> Attention:
    return unet.get_submodule(processor_name.removesuffix(".processor"))


def add_decoupled_cross_attention(unet: UNet2DConditionModel, projector: nn.Module, *, num_tokens: int) -> None:
    """Install reference k/v projections (copies of the text ones) and `projector` into `unet`, in place.

    Raises ValueError when the UNet already has an `encoder_hid_proj` (an IP-Adapter is loaded, or its
    text goes through a projection this design does not handle).
    """
    if unet.encoder_hid_proj is not None:
        raise ValueError(
            "the UNet already has an encoder_hid_proj (an IP-Adapter is loaded, or encoder_hid_dim_type="
            f"{unet.config.encoder_hid_dim_type!r}); load a fresh UNet from its folder before adding reference "
            "attention"
        )
    processors: dict[str, object] = {}
    for name, processor in unet.attn_processors.items():
        if not _gets_reference_tokens(name):
            processors[name] = processor
            continue
        attention = _attention_of(unet, name)
        if attention.to_k.bias is not None or attention.to_v.bias is not None:
            # IPAdapterAttnProcessor2_0's to_k_ip/to_v_ip have no bias: a copy would drop it silently.
            raise ValueError(f"{name}: to_k/to_v have a bias; decoupled attention copies them into bias-free layers")
        reference_processor = IPAdapterAttnProcessor2_0(
            hidden_size=attention.to_k.out_features,
            cross_attention_dim=attention.to_k.in_features,
            num_tokens=(num_tokens,),
            scale=1.0,
        )
        with torch.no_grad():
            reference_processor.to_k_ip[0].weight.copy_(attention.to_k.weight)
            reference_processor.to_v_ip[0].weight.copy_(attention.to_v.weight)
        parameter = attention.to_k.weight
        processors[name] = reference_processor.to(device=parameter.device, dtype=parameter.dtype)
    unet.set_attn_processor(processors)
    parameter = next(unet.parameters())
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projector]).to(
        device=parameter.device, dtype=parameter.dtype
    )
    # As diffusers' own `_load_ip_adapter_weights` does: an attribute on the config, read by the forward,
    # while the saved config keeps the original value (a saved base UNet stays loadable).
    unet.config.encoder_hid_dim_type = "ip_image_proj"


def reference_processors(unet: UNet2DConditionModel) -> Iterator[tuple[str, IPAdapterAttnProcessor2_0]]:
    """(name, processor) of every cross-attention layer with reference k/v, in stock key order."""
    processors = unet.attn_processors  # a walk over every module: once, not per name
    for name, processor in processors.items():
        if not _gets_reference_tokens(name):
            continue
        if not isinstance(processor, IPAdapterAttnProcessor2_0):
            raise ValueError(
                f"{name} has no reference attention ({type(processor).__name__}); "
                "call add_decoupled_cross_attention first"
            )
        yield name, processor


def set_reference_scale(unet: UNet2DConditionModel, scale: float) -> None:
    """The weight of the reference attention in every layer (0 = text only, 1 = as trained)."""
    for _, processor in reference_processors(unet):
        processor.scale = [float(scale)]


def reference_projector(unet: UNet2DConditionModel) -> nn.Module:
    """The projector installed by `add_decoupled_cross_attention`."""
    if not isinstance(unet.encoder_hid_proj, MultiIPAdapterImageProjection):
        raise ValueError("the UNet has no reference projector; call add_decoupled_cross_attention first")
    return unet.encoder_hid_proj.image_projection_layers[0]
