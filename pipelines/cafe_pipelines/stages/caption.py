"""CaptionStage: a caption for every image whose source did not bring one."""

from __future__ import annotations

from PIL import Image

from cafe_pipelines.batch import Batch, column, run_stage, set_rows
from cafe_pipelines.threads import set_threads
from cafe_vision.load import load_captioner
from cafe_vision.presets import get_preset


class CaptionStage:
    """Model stage (one captioner per actor). In: image, caption (may be empty). Out: caption, t_caption.

    Captions that came with the input (a manifest's `caption`, a shard's `.txt`) are kept.
    """

    def __init__(
        self,
        preset: str,
        *,
        device: str = "cpu",
        num_threads: int | None = None,
        dtype: str = "float32",
        max_new_tokens: int | None = None,
    ) -> None:
        set_threads(num_threads)
        overrides = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
        self.captioner = load_captioner(get_preset(preset), device=device, dtype=dtype, **overrides)

    def __call__(self, batch: Batch) -> Batch:
        batch = dict(batch)
        batch["caption"] = [str(c) for c in column(batch, "caption", "")]

        def work(b: Batch, indices: list[int]) -> None:
            todo = [i for i in indices if not b["caption"][i].strip()]
            if todo:
                captions = self.captioner([Image.fromarray(b["image"][i], "RGB") for i in todo])
                set_rows(b, "caption", todo, [c.strip() for c in captions], "")

        return run_stage("caption", batch, work)
