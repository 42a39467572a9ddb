"""Grounder: text-prompted boxes with transformers' `GroundingDinoForObjectDetection`, batched over images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoProcessor, GroundingDinoForObjectDetection
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoObjectDetectionOutput

from cafe_vision.detection import Detection, suppress_overlaps
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
        side = self.image_size_px
        # Resized here rather than by the processor, whose own resize rounds a 700x1 strip to
        # 0 pixels and fails; padding to the fixed square makes the result batch-independent.
        inputs = self.processor(
            images=[fit_inside(image, side) for image in rgb_images],
            text=prompts,
            do_resize=False,
            pad_size={"height": side, "width": side},
            padding=True,
            truncation=True,
            max_length=self.model.config.max_text_len,
            return_tensors="pt",
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        # Post-process in float32 whatever the model's dtype: sigmoids near the thresholds.
        outputs_fp32 = GroundingDinoObjectDetectionOutput(
            logits=outputs.logits.float(), pred_boxes=outputs.pred_boxes.float()
        )
        sizes_hw = [(image.height, image.width) for image in rgb_images]
        processed = self.processor.post_process_grounded_object_detection(
            outputs_fp32,
            input_ids=inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=sizes_hw,
        )
        return [
            self._detections(result, height, width) for result, (height, width) in zip(processed, sizes_hw, strict=True)
        ]

    def _detections(self, result: dict, height: int, width: int) -> list[Detection]:
        if len(result["boxes"]) == 0:
            # Checked first: with no box kept, the post-processor's text_labels is [""] (batch_decode([])).
            return []
        detections = []
        for box, score, label in zip(
            result["boxes"].tolist(), result["scores"].tolist(), result["text_labels"], strict=True
        ):
            if not all(math.isfinite(value) for value in (*box, score)):
                continue
            # Predicted boxes may reach past the image; clip them, and drop any left without area.
            x0, x1 = (float(min(max(x, 0.0), width)) for x in (box[0], box[2]))
            y0, y1 = (float(min(max(y, 0.0), height)) for y in (box[1], box[3]))
            if x1 <= x0 or y1 <= y0:
                continue
            detections.append(Detection((x0, y0, x1, y1), float(score), self._clean_phrase(label)))
        kept = suppress_overlaps(detections, self.nms_iou_threshold)
        return kept if self.max_detections is None else kept[: self.max_detections]

    def _clean_phrase(self, label: str) -> str:
        """The post-processor decodes the phrase with special tokens ("a dog. [SEP]"): keep the words."""
        words = [word for word in label.split() if word not in self._special_tokens]
        return " ".join(words).strip(" .")
