"""ClipScorer: CLIP image and text embeddings, and CLIP-T exactly as torchmetrics' `CLIPScore` computes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.images import to_rgb
from cafe_vision.pretrained import load_pretrained


def image_tensor(image: Image.Image) -> torch.Tensor:
    """`image` as the uint8 (3, H, W) tensor torchmetrics' `CLIPScore` hands the CLIP processor."""
    return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1).contiguous()


class ClipScorer:
    """CLIP embeddings of images and texts (`openai/clip-vit-base-patch32` or a folder like it).

    Preprocessing follows torchmetrics' `CLIPScore` (torchmetrics 1.9): the model's
    `CLIPProcessor` on uint8 (3, H, W) tensors, texts padded to the batch's longest, so CLIP-T
    numbers here are the published metric's. One difference: a prompt longer than CLIP's 77 tokens
    is truncated by the tokenizer (which keeps the end-of-text token CLIP pools at), where
    torchmetrics cuts the token ids and loses it.

    Args:
        model: a hub id (from the local HF cache) or a folder saved with `save_pretrained`
            holding a `CLIPModel` and its `CLIPProcessor`.
        batch_size: the most images or texts sent through the model at once.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: weights and activations dtype; embeddings come back as float32.

    Example:
        clip = ClipScorer("openai/clip-vit-base-patch32")
        clip.clip_t([Image.open("dog.jpg")], ["a photo of a dog"])   # array([31.2], dtype=float32)
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
        self.processor = load_pretrained(CLIPProcessor.from_pretrained, model)
        self.model = load_pretrained(CLIPModel.from_pretrained, model, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.dim: int = self.model.config.projection_dim
        self.max_length_tokens: int = self.model.config.text_config.max_position_embeddings

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) float32 image embeddings, each row of L2 norm 1."""
        return self._batched(images, self._embed_image_batch)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 text embeddings, each row of L2 norm 1."""
        return self._batched(texts, self._embed_text_batch)

    def clip_t(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """(N,) CLIP-T of each image with its prompt: 100 * max(cos, 0), in [0, 100]."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images and {len(prompts)} prompts; give one prompt per image")
        return clip_t_from_embeddings(self.embed_images(images), self.embed_texts(prompts))

    def clip_i(self, references: Sequence[Image.Image], images: Sequence[Image.Image]) -> np.ndarray:
        """(N,) cosine of each reference's image embedding with its image's, in [-1, 1]."""
        if len(references) != len(images):
            raise ValueError(f"got {len(references)} references and {len(images)} images; give one reference per image")
        return (self.embed_images(references) * self.embed_images(images)).sum(axis=1).astype(np.float32)

    def _batched(self, items: Sequence, embed_batch) -> np.ndarray:
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(items), self.batch_size):
            chunks.append(embed_batch(items[start : start + self.batch_size]))
        return np.concatenate(chunks)

    @torch.inference_mode()
    def _embed_image_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        inputs = self.processor(images=[image_tensor(image) for image in images], return_tensors="pt", padding=True)
        pixel_values = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        features = self.model.get_image_features(pixel_values=pixel_values).pooler_output.float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()

    @torch.inference_mode()
    def _embed_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.processor(
            text=list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_length_tokens
        )
        features = self.model.get_text_features(
            input_ids=inputs["input_ids"].to(self.device), attention_mask=inputs["attention_mask"].to(self.device)
        ).pooler_output.float()
        return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


def clip_t_from_embeddings(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """(N,) CLIP-T from paired L2-normalized rows: 100 * max(cos, 0), torchmetrics' CLIPScore."""
    cosines = (image_embeddings * text_embeddings).sum(axis=1)
    return (100.0 * np.maximum(cosines, 0.0)).astype(np.float32)
