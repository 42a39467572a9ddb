"""Detection: one grounded box, and class-agnostic non-maximum suppression over a list of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import nms


@dataclass(frozen=True)
class Detection:
    """A box found for a text prompt.

    box_xyxy: (x0, y0, x1, y1) in pixels of the original image, 0 <= x0 < x1 <= width, same for y.
    score: the box's confidence in [0, 1] (the best sigmoid over the prompt's tokens).
    phrase: the words of the prompt the box grounds (the tokens above the text threshold);
        empty when no token passed it.
    """

    box_xyxy: tuple[float, float, float, float]
    score: float
    phrase: str

    @property
    def area_px(self) -> float:
        x0, y0, x1, y1 = self.box_xyxy
        return (x1 - x0) * (y1 - y0)


def suppress_overlaps(detections: Sequence[Detection], iou_threshold: float) -> list[Detection]:
    """Class-agnostic NMS: keep the best-scoring box of any group overlapping by IoU > `iou_threshold`.

    Class-agnostic because one subject often matches several phrases of the prompt ("a dog. a
    puppy."), and downstream wants one box per object. Returns the kept boxes, best score first.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold={iou_threshold} must lie in [0, 1]")
    if not detections:
        return []
    boxes = torch.tensor([d.box_xyxy for d in detections], dtype=torch.float32)
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)
    kept = nms(boxes, scores, iou_threshold)  # indices, sorted by decreasing score
    return [detections[index] for index in kept.tolist()]
