"""ComposeStage: gates, then the triple itself (cut-out reference, mask, prompt, metadata), encoded."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from cafe_core import SCHEMA_VERSION, Triple, make_key
from cafe_pipelines.batch import EMPTY_IMAGE, EMPTY_MASK, Batch, column, refuse, run_stage
from cafe_vision.compose import DEFAULT_MARGIN, compose_reference, mask_image
from cafe_vision.gates import GateConfig, Gates

# Nothing from stages.segment or other model stages here: they load torch and every model's
# code, which this CPU stage's actor would import for nothing (5 s and ~700 MB per actor).

MEMBER_COLUMNS = {
    "target.jpg": "m_target",
    "reference.png": "m_reference",
    "mask.png": "m_mask",
    "prompt.txt": "m_prompt",
    "json": "m_json",
}


def prompt_naming(caption: str, subject: str) -> str:
    """The caption as the prompt, with the subject phrase added when the caption lost it."""
    caption = " ".join(caption.split())
    return caption if subject in caption.lower() else f"{caption}, {subject}".strip(", ")


class ComposeStage:
    """CPU stage. Applies the gates to each grounded, segmented subject; builds and encodes the
    triple of those that pass. Refused rows get `skipped` with the gate's reason code.

    In: image, caption, subject, box_xyxy, box_score, num_instances, mask, mask_iou, sha256, uri,
    input_key, notes. Out adds: key and the five members as bytes (m_target, ...); the image and
    mask columns are emptied, so only encoded bytes travel on to the writer.
    """

    def __init__(self, gates: GateConfig, models: Mapping[str, Mapping[str, str]], margin: float = DEFAULT_MARGIN):
        self.gates = Gates(gates)
        self.models = {role: dict(model) for role, model in models.items()}
        self.margin = margin

    def _compose_one(self, batch: Batch, i: int) -> None:
        pixels = np.asarray(batch["image"][i], dtype=np.uint8)
        mask = np.asarray(batch["mask"][i], dtype=bool)
        height, width = pixels.shape[:2]
        box = tuple(float(v) for v in batch["box_xyxy"][i])
        outcome = self.gates(
            image_size=(width, height),
            box_xyxy=box,
            box_score=float(batch["box_score"][i]),
            mask=mask,
            mask_iou=float(batch["mask_iou"][i]),
            num_instances=int(batch["num_instances"][i]),
        )
        if not outcome.ok:
            refuse(batch, i, "skipped", outcome.reason, outcome.detail)
            return
        target = Image.fromarray(pixels, "RGB")
        subject = str(batch["subject"][i])
        caption = str(batch["caption"][i])
        x0, y0, x1, y1 = (min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height), strict=True))
        metadata = {
            "schema_version": SCHEMA_VERSION,
            "subject": subject,
            "caption": caption,
            "box_xyxy": [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)],
            "scores": {name: round(value, 5) for name, value in outcome.measures.items()},
            "gates": list(outcome.passed),
            "source": {
                "uri": str(batch["uri"][i]),
                "sha256": str(batch["sha256"][i]),
                "input_key": str(batch["input_key"][i]),
            },
            "models": self.models,
            "round": 0,
        }
        notes = [n for n in str(batch["notes"][i]).split(",") if n]
        if notes:
            metadata["decode_notes"] = notes
        triple = Triple(
            key=make_key(str(batch["sha256"][i]), 0),
            target=target,
            reference=compose_reference(target, mask, (x0, y0, x1, y1), self.margin),
            mask=mask_image(mask),
            prompt=prompt_naming(caption, subject),
            metadata=metadata,
        )
        members = triple.encode()
        batch["key"][i] = triple.key
        for suffix, name in MEMBER_COLUMNS.items():
            batch[name][i] = members[suffix]

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        batch["key"] = column(batch, "key", "")
        for name in MEMBER_COLUMNS.values():
            batch[name] = column(batch, name, b"")

        def work(b: Batch, indices: list[int]) -> None:
            for i in indices:
                self._compose_one(b, i)

        batch = run_stage("compose", batch, work)
        n = len(batch["key"])
        batch["image"] = [EMPTY_IMAGE] * n
        batch["mask"] = [EMPTY_MASK] * n
        return batch
