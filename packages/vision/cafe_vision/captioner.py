"""Captioner: batched image captioning with any transformers image-to-text model (BLIP, BLIP-2, GIT, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.images import to_rgb
from cafe_vision.pretrained import load_pretrained


class Captioner:
    """Captions a batch of images with one text per image.

    A pipeline stage: the model is loaded once in `__init__`; `__call__` captions a batch.

    Args:
        model: a hub id (from the local HF cache) or a folder saved with `save_pretrained`, holding
            a model that `AutoModelForImageTextToText` and `AutoProcessor` load (BLIP, BLIP-2, GIT).
        max_new_tokens: the most tokens generated per caption.
        prompt: optional text the caption continues (conditional captioning, e.g. "a photography of").
            It is stripped from the returned captions.
        num_beams: beam width; 1 is greedy decoding.
        batch_size: the most images sent through the model at once; longer inputs are split.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: weights and activations dtype ("float32", "float16", "bfloat16" or a torch dtype).

    Example:
        captioner = Captioner("Salesforce/blip-image-captioning-large", prompt="a photography of")
        captions = captioner([Image.open("dog.jpg")])   # ["a dog sitting on a couch"]
    """

    def __init__(
        self,
        model: str | Path,
        *,
        max_new_tokens: int = 30,
        prompt: str | None = None,
        num_beams: int = 1,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
        if num_beams < 1:
            raise ValueError(f"num_beams={num_beams} must be at least 1")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if prompt is not None and not prompt.strip():
            raise ValueError("prompt is blank; pass None for unconditional captioning")
        self.model_name = str(model)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt.strip() if prompt is not None else None
        self.num_beams = num_beams
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model)
        self.model = load_pretrained(AutoModelForImageTextToText.from_pretrained, model, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        # The prompt as the tokenizer gives it back (lowercased, respaced): how outputs repeat it.
        self._decoded_prompt = (
            " ".join(self.tokenizer.decode(self.tokenizer(self.prompt, add_special_tokens=False).input_ids).split())
            if self.prompt is not None
            else None
        )

    def __call__(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order. Any PIL mode and size (down to 1×1) is accepted."""
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            captions.extend(self._caption_batch(images[start : start + self.batch_size]))
        return captions

    @torch.inference_mode()
    def _caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        rgb_images = [to_rgb(image) for image in images]
        if self.prompt is None:
            inputs = self.processor(images=rgb_images, return_tensors="pt")
        else:
            inputs = self.processor(images=rgb_images, text=[self.prompt] * len(rgb_images), return_tensors="pt")
            if self.model.config.model_type == "git":
                # GIT continues the text it is given; the BERT tokenizer ends it with [SEP], its
                # end-of-text token, which would stop generation at once. BLIP drops it itself.
                inputs["input_ids"] = inputs["input_ids"][:, :-1]
                inputs["attention_mask"] = inputs["attention_mask"][:, :-1]
            # BERT tokenizers add segment ids, which decoder-only models (GIT) reject in generate.
            inputs.pop("token_type_ids", None)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        generated = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            # At least one token, so that a model which would stop at once still says something.
            min_new_tokens=1,
            num_beams=self.num_beams,
            do_sample=False,
        )
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [self._strip_prompt(text) for text in texts]

    def _strip_prompt(self, text: str) -> str:
        """The caption without the prompt: models differ in whether their output repeats it."""
        caption = " ".join(text.split())
        prompt = self._decoded_prompt
        if prompt is not None and caption.lower().startswith(prompt.lower()):
            caption = caption[len(prompt) :].strip()
        return caption
