"""DecodeStage: input refs -> RGB pixels, with every bad file turned into a status reason."""

from __future__ import annotations

import os

from cafe_pipelines.batch import EMPTY_IMAGE, Batch, column, num_rows, refuse, run_stage
from cafe_pipelines.decoding import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE_PX,
    DecodeRefused,
    decode_image,
    read_input_bytes,
)
from cafe_vision.gates import GateConfig, image_side_ok


class DecodeStage:
    """CPU stage. Reads each input's bytes (inside its root only), decodes them safely, applies
    the image-size gate before any model sees the image.

    In: input_key, path, root, offset, size, refused. Out adds: image (HxWx3 uint8), sha256,
    notes (comma-separated decode.* repairs), status, reason, error, t_decode.
    """

    def __init__(
        self,
        gates: GateConfig,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_side_px: int | None = DEFAULT_MAX_SIDE_PX,
    ) -> None:
        self.gates = gates
        self.max_pixels = max_pixels
        self.max_side_px = max_side_px

    def _decode_one(self, batch: Batch, i: int) -> None:
        refused = batch["refused"][i]
        if refused:
            detail = str(batch["detail"][i]) if "detail" in batch else ""  # why listing refused it
            refuse(batch, i, "skipped", refused, detail or f"{batch['path'][i]} resolves outside {batch['root'][i]}")
            return
        path, root = str(batch["path"][i]), str(batch["root"][i])
        # Re-check at read time: a link may have been swapped since listing.
        if root and os.path.realpath(path) != root and not os.path.realpath(path).startswith(root + os.sep):
            refuse(batch, i, "skipped", "input.outside_root", f"{path} resolves outside {root}")
            return
        try:
            data = read_input_bytes(path, int(batch["offset"][i]), int(batch["size"][i]))
            decoded = decode_image(data, max_pixels=self.max_pixels, max_side_px=self.max_side_px)
        except DecodeRefused as exc:
            refuse(batch, i, "skipped", exc.reason, exc.detail)
            return
        height, width = decoded.pixels.shape[:2]
        side = image_side_ok((width, height), self.gates)
        if not side.ok:
            refuse(batch, i, "skipped", side.reason, side.detail)
            return
        batch["image"][i] = decoded.pixels
        batch["sha256"][i] = decoded.sha256
        batch["notes"][i] = ",".join(decoded.notes)

    def __call__(self, batch: Batch) -> Batch:
        n = num_rows(batch)
        batch = dict(batch)
        batch["status"] = column(batch, "status", "ok")
        batch["reason"] = column(batch, "reason", "")
        batch["error"] = column(batch, "error", "")
        batch["image"] = [EMPTY_IMAGE] * n
        batch["sha256"] = [""] * n
        batch["notes"] = [""] * n

        def work(b: Batch, indices: list[int]) -> None:
            for i in indices:
                self._decode_one(b, i)

        return run_stage("decode", batch, work)
