"""Export the trained weights (projector + reference k/v) and load them back.

An export is a folder:

- `ip_adapter.safetensors`, when the projector is linear with 4 tokens over CLIP image embeddings:
  the stock IP-Adapter layout, `image_proj.proj.*`, `image_proj.norm.*` and
  `ip_adapter.{1,3,5,...}.to_k_ip.weight` / `.to_v_ip.weight`;
- `cafe_adapter.safetensors` otherwise (resampler, other token counts, DINOv2, a trained UNet):
  `CustomizationModel.trainable_state_dict()`;
- `cafe_adapter.json`, always: format, preset, projector spec, feature kind, sizes, how to load it;
- `image_encoder/`, unless `include_image_encoder=False`: the frozen reference encoder (a `from_pretrained` folder).

Stock diffusers loads the first kind with

    pipe.load_ip_adapter(
        folder, subfolder="", weight_name="ip_adapter.safetensors", image_encoder_folder="image_encoder"
    )

and gives the images `CustomizationPipeline` gives with `text_guidance == reference_guidance`
(`pipe.set_ip_adapter_scale(reference_scale)`). `load_adapter(model, folder)` reads both kinds.
The folder is written under a temporary name and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from cafe_model.customization_model import PROJECTOR_PREFIX, CustomizationModel
from cafe_model.projector import (
    STOCK_LINEAR_NUM_TOKENS,
    LinearProjectorSpec,
    projector_spec_from_dict,
    projector_spec_to_dict,
)

ExportFormat = Literal["diffusers-ip-adapter", "cafe-adapter"]
STOCK_WEIGHT_NAME = "ip_adapter.safetensors"
CAFE_WEIGHT_NAME = "cafe_adapter.safetensors"
METADATA_NAME = "cafe_adapter.json"
IMAGE_ENCODER_FOLDER = "image_encoder"
FORMAT_VERSION = 1
# Stock key names of the linear projection <- diffusers' `ImageProjection` parameter names.
STOCK_PROJECTOR_KEYS = {"proj.weight": "image_embeds.weight", "proj.bias": "image_embeds.bias"}
STOCK_PROJECTOR_KEYS |= {"norm.weight": "norm.weight", "norm.bias": "norm.bias"}
PROJECTOR_PARAMETER_PREFIX = PROJECTOR_PREFIX + "image_projection_layers.0."


@dataclass(frozen=True)
class AdapterExport:
    """What `export_adapter` wrote: the folder, its format, the weights file and the image encoder subfolder."""

    folder: Path
    format: ExportFormat
    weight_name: str
    image_encoder_folder: str | None


def stock_loadable(model: CustomizationModel) -> bool:
    """True when stock `load_ip_adapter` can load this model's weights.

    Stock diffusers reads a linear projection with exactly 4 tokens, fed with CLIP's projected image
    embeddings from a `CLIPVisionModelWithProjection`, over a frozen base UNet (an IP-Adapter file
    cannot hold the UNet a `train_unet` model trains).
    """
    spec = model.projector_spec
    encoder = model.reference_encoder
    return (
        not model.train_unet
        and isinstance(spec, LinearProjectorSpec)
        and spec.num_tokens == STOCK_LINEAR_NUM_TOKENS
        and encoder.architecture == "clip"
        and encoder.feature == "image_embeds"
    )


def _stock_key_ids(model: CustomizationModel) -> dict[str, int]:
    """Processor name -> stock key id (1, 3, 5, ...: diffusers counts cross-attention layers in steps of 2)."""
    return {name: 2 * index + 1 for index, (name, _, _) in enumerate(model.reference_key_value_pairs())}


def _parameter_prefix(processor_name: str) -> str:
    return "unet." + processor_name  # e.g. unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor


def to_stock_state_dict(model: CustomizationModel) -> dict[str, torch.Tensor]:
    """The trainable tensors under stock IP-Adapter names (raises ValueError when `stock_loadable` is False)."""
    if not stock_loadable(model):
        raise ValueError("this model's projector has no stock diffusers layout; export it in cafe's format")
    trainable = model.trainable_state_dict()
    state = {
        f"image_proj.{stock}": trainable[PROJECTOR_PARAMETER_PREFIX + ours]
        for stock, ours in STOCK_PROJECTOR_KEYS.items()
    }
    for name, key_id in _stock_key_ids(model).items():
        for projection in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{key_id}.{projection}.weight"] = trainable[
                f"{_parameter_prefix(name)}.{projection}.0.weight"
            ]
    return state


def from_stock_state_dict(model: CustomizationModel, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_stock_state_dict`: stock names -> `trainable_state_dict` names of `model`."""
    converted: dict[str, torch.Tensor] = {}
    for stock, ours in STOCK_PROJECTOR_KEYS.items():
        converted[PROJECTOR_PARAMETER_PREFIX + ours] = _require(state, f"image_proj.{stock}")
    for name, key_id in _stock_key_ids(model).items():
        for projection in ("to_k_ip", "to_v_ip"):
            tensor = _require(state, f"ip_adapter.{key_id}.{projection}.weight")
            converted[f"{_parameter_prefix(name)}.{projection}.0.weight"] = tensor
    extra = len(state) - len(converted)
    if extra:
        raise ValueError(
            f"the IP-Adapter weights have {extra} tensors this model has no place for (another base model?)"
        )
    return converted


def _require(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"the IP-Adapter weights have no {key!r} (exported from a different base model or projector?)")
    return state[key]


def export_adapter(
    model: CustomizationModel, folder: str | Path, *, include_image_encoder: bool = True, overwrite: bool = False
) -> AdapterExport:
    """Write the trainable weights of `model` to `folder` (stock IP-Adapter layout where possible).

    Raises FileExistsError when `folder` exists, unless `overwrite`.
    """
    final = Path(folder)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; choose a new folder or pass overwrite=True")
    export_format: ExportFormat = "diffusers-ip-adapter" if stock_loadable(model) else "cafe-adapter"
    weight_name = STOCK_WEIGHT_NAME if export_format == "diffusers-ip-adapter" else CAFE_WEIGHT_NAME
    state = to_stock_state_dict(model) if export_format == "diffusers-ip-adapter" else model.trainable_state_dict()
    final.parent.mkdir(parents=True, exist_ok=True)
    # Same parent as the final folder, so the rename is atomic (one file system).
    temporary = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        # safetensors wants contiguous CPU tensors that share no memory.
        save_file(
            {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}, temporary / weight_name
        )
        encoder_folder = IMAGE_ENCODER_FOLDER if include_image_encoder else None
        if encoder_folder is not None:
            encoder = model.reference_encoder
            encoder.vision_model.save_pretrained(temporary / encoder_folder)
            encoder.image_processor.save_pretrained(temporary / encoder_folder)
        metadata = _metadata(model, export_format, weight_name, encoder_folder)
        (temporary / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
        if final.exists():
            # overwrite: move the old export aside first, so the final name never holds a mix.
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
            temporary.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temporary.rename(final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return AdapterExport(
        folder=final, format=export_format, weight_name=weight_name, image_encoder_folder=encoder_folder
    )


def _metadata(
    model: CustomizationModel, export_format: ExportFormat, weight_name: str, encoder_folder: str | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "format": export_format,
        "format_version": FORMAT_VERSION,
        "weight_name": weight_name,
        "preset": model.preset_name,
        "projector": projector_spec_to_dict(model.projector_spec),
        "reference_architecture": model.reference_encoder.architecture,
        "reference_feature": model.reference_encoder.feature,
        "feature_dim": model.reference_encoder.feature_dim,
        "cross_attention_dim": model.cross_attention_dim,
        "num_cross_attention_layers": len(model.reference_key_value_pairs()),
        "image_encoder_folder": encoder_folder,
    }
    if export_format == "diffusers-ip-adapter":
        metadata["diffusers_usage"] = (
            f'pipe.load_ip_adapter(folder, subfolder="", weight_name="{weight_name}", '
            f'image_encoder_folder="{encoder_folder}")'
        )
    return metadata


def read_adapter_metadata(folder: str | Path) -> dict[str, Any]:
    """The `cafe_adapter.json` of an export (raises FileNotFoundError naming the folder when it is not one)."""
    path = Path(folder) / METADATA_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a cafe adapter export: {METADATA_NAME} is missing")
    return json.loads(path.read_text())


def load_adapter(model: CustomizationModel, folder: str | Path) -> dict[str, Any]:
    """Load an export's trained weights into `model` (either format); returns its metadata.

    Raises ValueError when the export was made for another projector, feature kind or width.
    """
    metadata = read_adapter_metadata(folder)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder}: format_version {metadata.get('format_version')!r}; this cafe reads {FORMAT_VERSION}"
        )
    saved_spec = projector_spec_from_dict(metadata["projector"])
    # The init seed does not shape the weights; everything else must match.
    if projector_spec_to_dict(saved_spec) | {"seed": 0} != projector_spec_to_dict(model.projector_spec) | {"seed": 0}:
        raise ValueError(
            f"{folder} holds a {saved_spec} projector; the model has {model.projector_spec} (another preset?)"
        )
    for key, ours in (
        ("reference_feature", model.reference_encoder.feature),
        ("feature_dim", model.reference_encoder.feature_dim),
        ("cross_attention_dim", model.cross_attention_dim),
    ):
        if metadata[key] != ours:
            raise ValueError(
                f"{folder}: exported with {key}={metadata[key]!r}; this model has {ours!r} (another preset?)"
            )
    state = load_file(Path(folder) / metadata["weight_name"])
    if metadata["format"] == "diffusers-ip-adapter":
        state = from_stock_state_dict(model, state)
    elif metadata["format"] != "cafe-adapter":
        raise ValueError(f"{folder}: unknown export format {metadata['format']!r}")
    model.load_trainable_state_dict(state)
    return metadata
