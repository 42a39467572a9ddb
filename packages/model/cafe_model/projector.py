"""The trainable projector: reference features -> K reference tokens of the UNet's cross-attention width.

Both kinds are diffusers' own IP-Adapter image projections, so the UNet runs them through its
`encoder_hid_proj` exactly as it runs a stock IP-Adapter:
- `LinearProjectorSpec` -> `ImageProjection` (IP-Adapter's `ImageProjModel`: one linear layer from a
  global embedding to K x cross_attention_dim, then LayerNorm). With K = 4 and CLIP image embeddings
  this is the layout stock `load_ip_adapter` reads.
- `ResamplerProjectorSpec` -> `IPAdapterPlusImageProjection` (IP-Adapter Plus's perceiver resampler:
  K learned queries cross-attend to the encoder's patch tokens). Exported in cafe's own format.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection
from torch import nn

# Stock diffusers' loader hard-codes 4 tokens for the linear IP-Adapter projection.
STOCK_LINEAR_NUM_TOKENS = 4


@dataclass(frozen=True)
class LinearProjectorSpec:
    """IP-Adapter's linear projection: a global feature vector -> `num_tokens` tokens. `seed` fixes the init."""

    num_tokens: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens={self.num_tokens}; a projector needs at least 1 token")


@dataclass(frozen=True)
class ResamplerProjectorSpec:
    """A perceiver resampler: `num_tokens` learned queries over the encoder's tokens, `depth` blocks of `hidden_dim`."""

    num_tokens: int
    hidden_dim: int
    depth: int
    heads: int
    dim_head: int
    seed: int = 0

    def __post_init__(self) -> None:
        for field_name in ("num_tokens", "hidden_dim", "depth", "heads", "dim_head"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name}={getattr(self, field_name)}; it must be at least 1")


ProjectorSpec = LinearProjectorSpec | ResamplerProjectorSpec


def build_projector(spec: ProjectorSpec, *, feature_dim: int, cross_attention_dim: int) -> nn.Module:
    """A freshly initialized projector (deterministic in `spec.seed`); its output is (batch, num_tokens, cross_dim)."""
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if isinstance(spec, LinearProjectorSpec):
            return ImageProjection(
                image_embed_dim=feature_dim,
                cross_attention_dim=cross_attention_dim,
                num_image_text_embeds=spec.num_tokens,
            )
        return IPAdapterPlusImageProjection(
            embed_dims=feature_dim,
            output_dims=cross_attention_dim,
            hidden_dims=spec.hidden_dim,
            depth=spec.depth,
            dim_head=spec.dim_head,
            heads=spec.heads,
            num_queries=spec.num_tokens,
        )


def projector_spec_to_dict(spec: ProjectorSpec) -> dict[str, object]:
    """The spec as JSON-ready fields plus its `kind` (`linear` or `resampler`), for export metadata."""
    kind = "linear" if isinstance(spec, LinearProjectorSpec) else "resampler"
    return {"kind": kind, **{name: getattr(spec, name) for name in spec.__dataclass_fields__}}


def projector_spec_from_dict(fields: dict[str, object]) -> ProjectorSpec:
    """The inverse of `projector_spec_to_dict`; raises ValueError on an unknown kind."""
    values = dict(fields)
    kind = values.pop("kind", None)
    if kind == "linear":
        return LinearProjectorSpec(**values)  # type: ignore[arg-type]
    if kind == "resampler":
        return ResamplerProjectorSpec(**values)  # type: ignore[arg-type]
    raise ValueError(f"projector kind={kind!r} is unknown; expected 'linear' or 'resampler'")
