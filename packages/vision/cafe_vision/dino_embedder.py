"""DinoEmbedder: the DINO ViT's CLS token of each image, L2-normalized (the DreamBooth DINO score's embedding)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTModel

from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.images import to_rgb
from cafe_vision.pretrained import load_pretrained


class DinoEmbedder:
    """Embeds images with a self-supervised DINO ViT (`facebook/dino-vits16` or a folder like it).

    The embedding is the last layer's CLS token (after the final LayerNorm), as the DreamBooth
    evaluation computes it; the image processor is the one saved with the model.

    Args:
        model: a hub id (from the local HF cache) or a folder saved with `save_pretrained`.
        batch_size: the most images sent through the model at once.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: weights and activations dtype; embeddings come back as float32.

    Example:
        embedder = DinoEmbedder("facebook/dino-vits16")
        embedder([Image.open("a.jpg"), Image.open("b.jpg")]).shape   # (2, 384), rows of norm 1
    """

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, model)
        self.model = load_pretrained(ViTModel.from_pretrained, model, add_pooling_layer=False, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.dim: int = self.model.config.hidden_size

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32 CLS embeddings of `images`, each row of L2 norm 1."""
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            chunks.append(self._embed_batch(images[start : start + self.batch_size]))
        return np.concatenate(chunks)

    @torch.inference_mode()
    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        inputs = self.processor(images=[to_rgb(image) for image in images], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        cls = self.model(pixel_values=pixel_values).last_hidden_state[:, 0].float()
        return torch.nn.functional.normalize(cls, dim=-1).cpu().numpy()
