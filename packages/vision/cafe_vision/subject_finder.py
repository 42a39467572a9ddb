"""SubjectFinder: where a subject phrase is in each image, by Grounding DINO (box) then SAM (mask)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cafe_vision.cutout import integer_box
from cafe_vision.grounder import Grounder
from cafe_vision.images import to_rgb
from cafe_vision.segmenter import Segmenter


@dataclass(frozen=True)
class FoundSubject:
    """The subject found in one image.

    box_xyxy: the best-scoring box, whole pixels (x0, y0, x1, y1), x0 < x1 <= width; None if no box passed.
    mask: bool (H, W) in image coordinates, SAM's mask for that box (the box itself when SAM's
        mask is empty); None if not found.
    num_instances: the boxes above the grounder's box threshold after class-agnostic NMS.
    box_score: the grounder's score of `box_xyxy`; 0.0 if not found.
    """

    box_xyxy: tuple[int, int, int, int] | None
    mask: np.ndarray | None
    num_instances: int
    box_score: float

    @property
    def found(self) -> bool:
        return self.box_xyxy is not None

    @classmethod
    def whole_image(cls, image: Image.Image) -> FoundSubject:
        """The whole image as the subject (its box and an all-True mask), e.g. for a subject-only candidate."""
        return cls((0, 0, image.width, image.height), np.ones((image.height, image.width), dtype=bool), 1, 1.0)


class SubjectFinder:
    """Grounds `subjects[i]` in `images[i]` with a `Grounder`, segments the best box with a `Segmenter`.

    The grounder's own thresholds and NMS decide which boxes count; pass a grounder built with the
    thresholds wanted (the scorer presets carry them).

    Example:
        finder = SubjectFinder(load_grounder(preset), load_segmenter(preset))
        [found] = finder([Image.open("dog.jpg")], ["a dog"])
        found.box_xyxy, found.mask.shape, found.num_instances   # (12, 40, 301, 410), (480, 640), 1
    """

    def __init__(self, grounder: Grounder, segmenter: Segmenter) -> None:
        self.grounder = grounder
        self.segmenter = segmenter

    def __call__(self, images: Sequence[Image.Image], subjects: Sequence[str]) -> list[FoundSubject]:
        if len(images) != len(subjects):
            raise ValueError(f"got {len(images)} images and {len(subjects)} subjects; give one subject per image")
        rgb_images = [to_rgb(image) for image in images]
        detections = self.grounder(rgb_images, list(subjects))
        boxes = [[found[0].box_xyxy] if found else [] for found in detections]
        masks = self.segmenter(rgb_images, boxes)
        results = []
        for image, found, mask_results in zip(rgb_images, detections, masks, strict=True):
            if not found:
                results.append(FoundSubject(None, None, 0, 0.0))
                continue
            best = found[0]
            box = integer_box(best.box_xyxy, image.width, image.height)
            mask = mask_results[0].mask
            if not mask.any():
                mask = np.zeros((image.height, image.width), dtype=bool)
                mask[box[1] : box[3], box[0] : box[2]] = True
            results.append(FoundSubject(box, mask, len(found), float(best.score)))
        return results
