"""GroundStage: the caption's main subject, found in the image as a box."""

from __future__ import annotations

from PIL import Image

from cafe_pipelines.batch import Batch, column, refuse, run_stage, set_rows
from cafe_pipelines.threads import set_threads
from cafe_vision.load import load_grounder
from cafe_vision.presets import get_preset
from cafe_vision.subject import names_subject, subject_query

NO_BOX = (0.0, 0.0, 0.0, 0.0)


class GroundStage:
    """Model stage (one grounder per actor). In: image, caption. Out: subject, box_xyxy,
    box_score, num_instances, t_ground.

    The grounder is prompted with all noun phrases of the caption (the subject first) so it can
    tell the subject from what surrounds it; the best box whose phrase names the subject's head
    noun is kept. `require_subject_phrase=False` keeps the best box of any phrase instead (for
    random tiny models, whose phrases are noise). Refusals: `subject.no_noun_phrase` (the
    caption names nothing), `subject.not_grounded` (no box for the subject).
    """

    def __init__(
        self,
        preset: str,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        dtype: str = "float32",
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou_threshold: float = 0.5,
        require_subject_phrase: bool = True,
        max_phrases: int = 4,
    ) -> None:
        set_threads(num_threads)
        self.grounder = load_grounder(
            get_preset(preset),
            device=device,
            dtype=dtype,
            box_threshold=box_threshold,
            text_threshold=text_threshold,
            nms_iou_threshold=nms_iou_threshold,
        )
        self.require_subject_phrase = require_subject_phrase
        self.max_phrases = max_phrases

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        batch["subject"] = column(batch, "subject", "")
        batch["box_xyxy"] = column(batch, "box_xyxy", NO_BOX)
        batch["box_score"] = column(batch, "box_score", 0.0)
        batch["num_instances"] = column(batch, "num_instances", 0)

        def work(b: Batch, indices: list[int]) -> None:
            queries = {}
            for i in indices:
                query = subject_query(str(b["caption"][i]), self.max_phrases)
                if query is None:
                    refuse(b, i, "skipped", "subject.no_noun_phrase", f"caption {b['caption'][i]!r} names no subject")
                else:
                    queries[i] = query
            todo = list(queries)
            if not todo:
                return
            images = [Image.fromarray(b["image"][i], "RGB") for i in todo]
            detections = self.grounder(images, [queries[i].prompt for i in todo])
            for i, found in zip(todo, detections, strict=True):
                subject = queries[i].subject
                matching = [d for d in found if names_subject(d.phrase, subject)]
                candidates = matching if (matching or self.require_subject_phrase) else found
                if not candidates:
                    refuse(
                        b, i, "skipped", "subject.not_grounded", f"no box for {subject!r} ({len(found)} boxes found)"
                    )
                    continue
                best = max(candidates, key=lambda d: d.score)
                set_rows(b, "subject", [i], [subject], "")
                set_rows(b, "box_xyxy", [i], [tuple(float(v) for v in best.box_xyxy)], NO_BOX)
                set_rows(b, "box_score", [i], [float(best.score)], 0.0)
                set_rows(b, "num_instances", [i], [len(candidates)], 0)

        return run_stage("ground", batch, work)
