"""Assemble a segment-anything `Sam` of any size and load a state_dict checkpoint into it.

This is `segment_anything.build_sam._build_sam` with the sizes as arguments: with `SAM_VIT_B` /
`SAM_VIT_L` / `SAM_VIT_H` it builds exactly the modules `sam_model_registry[...]` builds, so the
official checkpoints load; with a small `SamArch` it builds the tiny models the tests use. One
loading path for every size means the tested code is the code that loads real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer


@dataclass(frozen=True)
class SamArch:
    """The sizes of a SAM. `image_size_px` is the square input; images are resized to fit it."""

    name: str
    image_size_px: int
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    patch_size_px: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256

    def __post_init__(self) -> None:
        if self.image_size_px % self.patch_size_px:
            raise ValueError(
                f"SamArch {self.name!r}: image_size_px={self.image_size_px} must be a multiple of "
                f"patch_size_px={self.patch_size_px}"
            )
        if any(not 0 <= index < self.encoder_depth for index in self.encoder_global_attn_indexes):
            raise ValueError(
                f"SamArch {self.name!r}: encoder_global_attn_indexes {self.encoder_global_attn_indexes} "
                f"must lie in [0, {self.encoder_depth})"
            )


# The official sizes, as in segment_anything.build_sam.
SAM_VIT_B = SamArch("vit_b", 1024, 768, 12, 12, (2, 5, 8, 11))
SAM_VIT_L = SamArch("vit_l", 1024, 1024, 24, 16, (5, 11, 17, 23))
SAM_VIT_H = SamArch("vit_h", 1024, 1280, 32, 16, (7, 15, 23, 31))


def build_sam(arch: SamArch) -> Sam:
    """A `Sam` of size `arch` at the framework's default init, in eval mode."""
    embedding_side = arch.image_size_px // arch.patch_size_px
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.encoder_depth,
            embed_dim=arch.encoder_embed_dim,
            img_size=arch.image_size_px,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.encoder_num_heads,
            patch_size=arch.patch_size_px,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=arch.encoder_global_attn_indexes,
            window_size=arch.window_size,
            out_chans=arch.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.prompt_embed_dim,
            image_embedding_size=(embedding_side, embedding_side),
            input_image_size=(arch.image_size_px, arch.image_size_px),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=arch.prompt_embed_dim,
                mlp_dim=arch.decoder_mlp_dim,
                num_heads=arch.decoder_num_heads,
            ),
            transformer_dim=arch.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=arch.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(arch: SamArch, checkpoint: str | Path) -> Sam:
    """Build a `Sam` of size `arch` and load the state_dict saved at `checkpoint` (strictly)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"SAM checkpoint {path} does not exist")
    # weights_only: a checkpoint is a plain state_dict; never unpickle arbitrary objects.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    sam = build_sam(arch)
    try:
        sam.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise RuntimeError(
            f"SAM checkpoint {path} does not fit the {arch.name!r} architecture "
            f"(image {arch.image_size_px} px, encoder dim {arch.encoder_embed_dim}, depth {arch.encoder_depth}); "
            "pick the SamArch the checkpoint was trained with (sam_vit_b_* -> SAM_VIT_B, sam_vit_h_* -> SAM_VIT_H)."
        ) from error
    return sam.eval()
