"""SegmentStage: the subject's mask inside its box."""

from __future__ import annotations

from PIL import Image

from cafe_pipelines.batch import EMPTY_MASK, Batch, column, run_stage, set_rows
from cafe_pipelines.threads import set_threads
from cafe_vision.load import load_segmenter
from cafe_vision.presets import get_preset


class SegmentStage:
    """Model stage (one SAM per actor). In: image, box_xyxy. Out: mask (HxW bool), mask_iou, t_segment.

    Small holes and islands are cleaned up by the segmenter (`min_hole_area_px`, `min_island_area_px`).
    """

    def __init__(
        self,
        preset: str,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        dtype: str = "float32",
        sam_checkpoint: str | None = None,
        min_hole_area_px: int = 0,
        min_island_area_px: int = 0,
    ) -> None:
        set_threads(num_threads)
        self.segmenter = load_segmenter(
            get_preset(preset),
            checkpoint=sam_checkpoint,
            device=device,
            dtype=dtype,
            min_hole_area_px=min_hole_area_px,
            min_island_area_px=min_island_area_px,
        )

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        batch["mask"] = column(batch, "mask", EMPTY_MASK)
        batch["mask_iou"] = column(batch, "mask_iou", 0.0)

        def work(b: Batch, indices: list[int]) -> None:
            images = [Image.fromarray(b["image"][i], "RGB") for i in indices]
            results = self.segmenter(images, [[tuple(b["box_xyxy"][i])] for i in indices])
            set_rows(b, "mask", indices, [r[0].mask for r in results], EMPTY_MASK)
            set_rows(b, "mask_iou", indices, [float(r[0].predicted_iou) for r in results], 0.0)

        return run_stage("segment", batch, work)
