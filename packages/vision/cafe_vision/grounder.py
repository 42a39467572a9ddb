"""Grounder: text-prompted boxes with transformers' `GroundingDinoForObjectDetection`, batched over images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import nms
from transformers import AutoProcessor, GroundingDinoForObjectDetection
from transformers.image_transforms import center_to_corners_format

from cafe_vision.detection import Detection
from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.images import fit_inside, to_rgb
from cafe_vision.pretrained import load_pretrained


def normalize_prompt(prompt: str) -> str:
    """A Grounding DINO prompt: lowercase, single-spaced, ending with "." ("A dog. A couch" -> "a dog. a couch.").

    The model was trained on dot-separated lowercase phrases. The final dot also matters to the
    processor: a list of texts without dots is taken as the candidate labels of ONE image and merged.
    """
    text = " ".join(prompt.lower().split())
    if not text.strip(" ."):
        raise ValueError(f"prompt {prompt!r} names nothing; give phrases such as 'a dog. a couch.'")
    return text if text.endswith(".") else text + "."


class Grounder:
    """Finds the boxes of the phrases of one text prompt per image.

    A pipeline stage: the model is loaded once in `__init__`; `__call__` grounds a batch.

    Every image is resized to fit an `image_size_px` square (aspect kept) and padded to it, so an
    image's boxes never depend on which other images share its batch (the stock processor pads
    to the batch's largest image, which changes the backbone's output at the borders).

    Args:
        model: a hub id (from the local HF cache) or a folder saved with `save_pretrained` holding
            a `GroundingDinoForObjectDetection` and its processor.
        box_threshold: keep boxes whose score (best sigmoid over the prompt tokens) exceeds this.
        text_threshold: a prompt token belongs to a box's phrase when its sigmoid exceeds this.
        nms_iou_threshold: class-agnostic NMS; of boxes overlapping by more than this IoU, the best stays.
        image_size_px: the square side images are fitted into (the model's input resolution).
        max_detections: keep at most this many boxes per image (best first); None keeps all.
        batch_size: the most images sent through the model at once; longer inputs are split.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: weights and activations dtype ("float32", "float16", "bfloat16" or a torch dtype).

    Example:
        grounder = Grounder("IDEA-Research/grounding-dino-tiny")
        [detections] = grounder([Image.open("dog.jpg")], ["a dog. a couch."])
        detections[0].box_xyxy, detections[0].score, detections[0].phrase   # (12.0, 40.5, 300.2, 410.0), 0.61, "a dog"
    """

    def __init__(
        self,
        model: str | Path,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou_threshold: float = 0.5,
        image_size_px: int = 1024,
        max_detections: int | None = None,
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        for name, value in (
            ("box_threshold", box_threshold),
            ("text_threshold", text_threshold),
            ("nms_iou_threshold", nms_iou_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must lie in [0, 1]")
        if image_size_px < 32:
            raise ValueError(f"image_size_px={image_size_px} is too small; use at least 32 (1024 for real models)")
        if max_detections is not None and max_detections < 1:
            raise ValueError(f"max_detections={max_detections} must be at least 1, or None for no limit")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model_name = str(model)
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.image_size_px = image_size_px
        self.max_detections = max_detections
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model)
        self.model = load_pretrained(GroundingDinoForObjectDetection.from_pretrained, model, dtype=self.dtype)
        self.model.to(self.device).eval()
        self._special_tokens = set(self.processor.tokenizer.all_special_tokens)
        # The processor's fused rescale-and-normalize: (x - mean / r) / (std / r), r the rescale factor.
        image_processor = self.processor.image_processor
        mean = image_processor.image_mean if image_processor.do_normalize else (0.0, 0.0, 0.0)
        std = image_processor.image_std if image_processor.do_normalize else (1.0, 1.0, 1.0)
        unscale = 1.0 / image_processor.rescale_factor if image_processor.do_rescale else 1.0
        self._mean = (torch.tensor(mean) * unscale).view(1, 3, 1, 1)
        self._std = (torch.tensor(std) * unscale).view(1, 3, 1, 1)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[list[Detection]]:
        """For each image, the boxes of the phrases of its prompt, best score first.

        `prompts[i]` is image i's prompt, dot-separated phrases such as "a dog. a couch.".
        """
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images and {len(prompts)} prompts; give one prompt per image")
        normalized = [normalize_prompt(prompt) for prompt in prompts]
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            results.extend(self._ground_batch(images[start:stop], normalized[start:stop]))
        return results

    @torch.inference_mode()
    def _ground_batch(self, images: Sequence[Image.Image], prompts: list[str]) -> list[list[Detection]]:
        rgb_images = [to_rgb(image) for image in images]
        text = self.processor.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.model.config.max_text_len, return_tensors="pt"
        )
        pixel_values, pixel_mask = self._pixels(rgb_images)
        outputs = self.model(
            **{name: tensor.to(self.device) for name, tensor in text.items()},
            pixel_values=pixel_values.to(device=self.device, dtype=self.dtype),
            pixel_mask=pixel_mask.to(self.device),
        )
        # Post-processed in float32 whatever the model's dtype: sigmoids near the thresholds.
        probs = outputs.logits.float().sigmoid().cpu()  # (B, queries, text tokens)
        boxes = center_to_corners_format(outputs.pred_boxes.float().cpu())  # (B, queries, 4), relative
        return [
            self._detections(image_probs, image_boxes, input_ids, image.height, image.width)
            for image_probs, image_boxes, input_ids, image in zip(
                probs, boxes, text["input_ids"], rgb_images, strict=True
            )
        ]

    def _pixels(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values (B, 3, S, S) float32, pixel_mask (B, S, S) int64) as the processor makes them.

        Each image is fitted into the `image_size_px` square here, rather than by the processor,
        whose own resize rounds a 700x1 strip to 0 pixels and fails; it is rescaled and normalized
        with the processor's constants and padded with zeros at the bottom and right, which makes
        the result independent of the batch (the stock processor pads to the batch's largest
        image). The processor's per-call overhead costs more than its arithmetic at scoring sizes;
        this is the same arithmetic (tested equal) in one tensor operation.
        """
        side = self.image_size_px
        pixels = torch.zeros((len(images), side, side, 3), dtype=torch.uint8)
        pixel_mask = torch.zeros((len(images), side, side), dtype=torch.int64)
        for index, image in enumerate(images):
            fitted = fit_inside(image, side)
            pixels[index, : fitted.height, : fitted.width] = torch.from_numpy(np.array(fitted))
            pixel_mask[index, : fitted.height, : fitted.width] = 1
        values = (pixels.permute(0, 3, 1, 2).float() - self._mean) / self._std
        return values * pixel_mask[:, None], pixel_mask

    def _detections(
        self, probs: torch.Tensor, boxes: torch.Tensor, input_ids: torch.Tensor, height: int, width: int
    ) -> list[Detection]:
        """One image's detections from its (queries, tokens) sigmoids and (queries, 4) relative corner boxes.

        What the processor's `post_process_grounded_object_detection` keeps (score = best token
        sigmoid > box_threshold; phrase = the tokens above text_threshold, the first and the last
        position excluded), then clipped to the image and NMS-ed; phrases are decoded only for the
        boxes NMS keeps, where the processor decodes every box above the threshold.
        """
        scores = probs.max(dim=-1).values
        pixels = boxes * torch.tensor([width, height, width, height], dtype=torch.float32)
        keep = (scores > self.box_threshold) & torch.isfinite(pixels).all(dim=-1) & torch.isfinite(scores)
        queries = keep.nonzero(as_tuple=True)[0]
        # Predicted boxes may reach past the image; clip them, and drop any left without area.
        clipped = pixels[queries].clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0.0, width)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0.0, height)
        has_area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        queries, clipped = queries[has_area], clipped[has_area]
        order = nms(clipped, scores[queries], self.nms_iou_threshold).tolist()  # best score first
        if self.max_detections is not None:
            order = order[: self.max_detections]
        posmaps = probs[queries[order]] > self.text_threshold
        posmaps[:, 0] = False
        posmaps[:, probs.shape[-1] - 1 :] = False
        detections = []
        for row, posmap in zip(order, posmaps, strict=True):
            phrase = self.processor.tokenizer.decode(input_ids[posmap[: len(input_ids)]].tolist())
            box = tuple(float(v) for v in clipped[row].tolist())
            detections.append(Detection(box, float(scores[queries[row]]), self._clean_phrase(phrase)))
        return detections

    def _clean_phrase(self, label: str) -> str:
        """The post-processor decodes the phrase with special tokens ("a dog. [SEP]"): keep the words."""
        words = [word for word in label.split() if word not in self._special_tokens]
        return " ".join(words).strip(" .")
