"""Segmenter: box-prompted masks with segment-anything's `Sam`, every image's boxes decoded in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.images import fit_inside, to_rgb
from cafe_vision.mask_cleanup import clean_mask
from cafe_vision.sam_decode import decode_boxes
from cafe_vision.sam_model import SamArch, load_sam


@dataclass(frozen=True)
class MaskResult:
    """The mask SAM gives one box prompt.

    mask: bool array (H, W) in the original image's size, True inside the object.
    predicted_iou: SAM's own estimate of the mask's IoU with the object, clipped to [0, 1]; of
        SAM's three candidate masks the one with the highest estimate is kept.
    """

    mask: np.ndarray
    predicted_iou: float


class Segmenter:
    """Segments the object in each box of each image.

    A pipeline stage: the model is loaded once in `__init__`; `__call__` segments a batch. Each
    image is resized to fit SAM's square input and padded, as `SamPredictor` does, so an image's
    masks never depend on the other images in its batch.

    Args:
        checkpoint: a state_dict `.pth` (an official SAM checkpoint, or one `random_sam_checkpoint` wrote).
        arch: the architecture the checkpoint was trained with (`SAM_VIT_B`, `SAM_VIT_H`, ...).
        min_hole_area_px: fill holes smaller than this many pixels (0: off).
        min_island_area_px: remove separate pieces smaller than this many pixels (0: off); the
            largest piece always stays.
        batch_size: the most images sent through the image encoder at once; longer inputs are split.
        device: "cpu" (default), "cuda", "cuda:N" or "auto".
        dtype: weights and activations dtype ("float32", "float16", "bfloat16" or a torch dtype).

    Example:
        segmenter = Segmenter(SAM_VIT_H_CHECKPOINT.resolve(), SAM_VIT_H, min_hole_area_px=100)
        [[result]] = segmenter([Image.open("dog.jpg")], [[(12, 40, 300, 410)]])
        result.mask.shape, result.predicted_iou   # (480, 640), 0.93
    """

    def __init__(
        self,
        checkpoint: str | Path,
        arch: SamArch,
        *,
        min_hole_area_px: int = 0,
        min_island_area_px: int = 0,
        batch_size: int = 4,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> None:
        if min_hole_area_px < 0 or min_island_area_px < 0:
            raise ValueError(
                f"min_hole_area_px={min_hole_area_px} and min_island_area_px={min_island_area_px} must not be negative"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.checkpoint = Path(checkpoint)
        self.arch = arch
        self.min_hole_area_px = min_hole_area_px
        self.min_island_area_px = min_island_area_px
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        # Weights stay float32 and a lower `dtype` runs through autocast: segment-anything's prompt
        # encoder casts box coordinates to float32 itself, so a Sam cast to bfloat16 fails.
        self.model = load_sam(arch, checkpoint).to(device=self.device).eval()
        self.image_size_px: int = self.model.image_encoder.img_size

    def __call__(
        self, images: Sequence[Image.Image], boxes_xyxy: Sequence[Sequence[Sequence[float]]]
    ) -> list[list[MaskResult]]:
        """For each image, one mask per box of `boxes_xyxy[i]` (pixels of that image, x0 y0 x1 y1), in order.

        An image with no boxes costs nothing and gets an empty list.
        """
        if len(images) != len(boxes_xyxy):
            raise ValueError(f"got {len(images)} images and {len(boxes_xyxy)} box lists; give one list per image")
        boxes_per_image = [_as_boxes(boxes, index) for index, boxes in enumerate(boxes_xyxy)]
        results: list[list[MaskResult]] = [[] for _ in images]
        with_boxes = [index for index, boxes in enumerate(boxes_per_image) if len(boxes)]
        for start in range(0, len(with_boxes), self.batch_size):
            chunk = with_boxes[start : start + self.batch_size]
            chunk_results = self._segment_batch([images[i] for i in chunk], [boxes_per_image[i] for i in chunk])
            for index, image_results in zip(chunk, chunk_results, strict=True):
                results[index] = image_results
        return results

    @torch.inference_mode()
    def _segment_batch(self, images: list[Image.Image], boxes_per_image: list[np.ndarray]) -> list[list[MaskResult]]:
        inputs, input_sizes, boxes_in = [], [], []
        for image, boxes in zip(images, boxes_per_image, strict=True):
            rgb = to_rgb(image)
            # As SamPredictor: the longest side becomes SAM's input side (ResizeLongestSide's
            # arithmetic and bilinear resize), boxes scaled alike; fit_inside also keeps a 1-pixel
            # strip from rounding to 0 pixels, where ResizeLongestSide fails.
            resized = np.array(fit_inside(rgb, self.image_size_px))  # a writable copy, as torch wants
            image_chw = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()
            inputs.append(self.model.preprocess(image_chw))  # normalized and padded to the square
            input_sizes.append((resized.shape[0], resized.shape[1]))
            scale_xyxy = np.array([resized.shape[1] / rgb.width, resized.shape[0] / rgb.height] * 2, dtype=np.float32)
            boxes_in.append(torch.as_tensor(boxes * scale_xyxy))
        owners = torch.cat([torch.full((len(b),), i, dtype=torch.int64) for i, b in enumerate(boxes_in)])
        low_precision = self.dtype != torch.float32
        with torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=low_precision):
            embeddings = self.model.image_encoder(torch.stack(inputs))
            # All boxes of all images through the mask decoder at once (Sam.forward loops per image).
            logits, iou_predictions = decode_boxes(
                self.model, embeddings, owners.to(self.device), torch.cat(boxes_in).to(self.device)
            )
        iou_predictions = iou_predictions.float()  # (boxes, 3)
        best = iou_predictions.argmax(dim=1)  # (boxes,)
        rows = torch.arange(len(best), device=best.device)
        best_logits = logits[rows, best].unsqueeze(1).float()  # (boxes, 1, h, w)
        best_ious = iou_predictions[rows, best].clamp(0.0, 1.0).tolist()
        results, start = [], 0
        for image, input_hw, boxes in zip(images, input_sizes, boxes_in, strict=True):
            stop = start + len(boxes)
            # Only the kept mask is brought to the image's size, in one step from the low-resolution
            # logits, as Sam.postprocess_masks does (a 12 MP photo with 10 boxes and all three
            # candidates at full size would need 1.4 GB).
            masks = self.model.postprocess_masks(best_logits[start:stop], input_hw, (image.height, image.width))
            masks_np = (masks[:, 0] > self.model.mask_threshold).cpu().numpy()
            results.append(
                [
                    MaskResult(self._clean(mask), float(iou))
                    for mask, iou in zip(masks_np, best_ious[start:stop], strict=True)
                ]
            )
            start = stop
        return results

    def _clean(self, mask: np.ndarray) -> np.ndarray:
        if self.min_hole_area_px == 0 and self.min_island_area_px == 0:
            return mask
        return clean_mask(mask, min_hole_area_px=self.min_hole_area_px, min_island_area_px=self.min_island_area_px)


def _as_boxes(boxes: Sequence[Sequence[float]], image_index: int) -> np.ndarray:
    """`boxes` as a float32 (N, 4) array of finite x0 < x1, y0 < y1 boxes; a loud error otherwise."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"image {image_index}: boxes must be (x0, y0, x1, y1) rows, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"image {image_index}: boxes contain NaN or infinity: {array.tolist()}")
    if (array[:, 2] <= array[:, 0]).any() or (array[:, 3] <= array[:, 1]).any():
        raise ValueError(f"image {image_index}: every box needs x0 < x1 and y0 < y1, got {array.tolist()}")
    return array
