"""A run's metrics: one JSON line per logged step in `RUN/metrics.jsonl`, the same scalars in `RUN/tensorboard/`.

    log = MetricsLog(run_dir, resume_step=0)             # the main process only
    log.scalars(12, {"loss": 0.31, "lr": 1e-4, "grad_norm": None, ...})
    log.image("validation", 10, grid)                     # a PIL image
    log.close()

    tensorboard --logdir RUN/tensorboard

metrics.jsonl keeps every key of a record (None as null); TensorBoard gets each number as a scalar
tagged by its key (None is left out: TensorBoard has no missing values; NaN is kept, to show a divergence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tensorboardX import SummaryWriter

from cafe_core.layout import atomic_write

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def trim_jsonl(path: Path, last_step: int) -> None:
    """Keep the lines of `path` (if it exists) whose record's step is at most `last_step`; drop unreadable ones.

    Rewritten through a temporary file and a rename, and only when a line goes: a crash here
    leaves the old file or the new one, never half of it.
    """
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if (step := _step_of(line)) is not None and step <= last_step]
    if len(kept) < len(lines):
        atomic_write(path, "".join(kept).encode(), path.with_name(path.name + ".tmp"))


def _step_of(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a line cut short or not a record of this log."""
    if not line.endswith("\n"):
        return None  # the last line of a crash mid-write
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None


class MetricsLog:
    """Appends to `run_dir/metrics.jsonl` and writes TensorBoard events under `run_dir/tensorboard/`."""

    def __init__(self, run_dir: str | Path, *, resume_step: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.jsonl_path = self.run_dir / METRICS_NAME
        self.tensorboard_dir = self.run_dir / TENSORBOARD_DIR
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # A resume from step N after a crash at a later step: the steps past N are run and logged
        # again, so metrics.jsonl loses its lines past N (and a line the crash cut short), and
        # TensorBoard drops the earlier file's events past N: both show one run, not a fork.
        trim_jsonl(self.jsonl_path, resume_step)
        purge_step = resume_step + 1 if resume_step > 0 else None
        self._writer = SummaryWriter(logdir=str(self.tensorboard_dir), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """One line `{"step": step, **values}` in metrics.jsonl; each number as a TensorBoard scalar."""
        with open(self.jsonl_path, "a") as metrics:
            metrics.write(json.dumps({"step": step, **values}) + "\n")
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, value, global_step=step)

    def image(self, tag: str, step: int, image: Image.Image) -> None:
        """A PIL image as a TensorBoard image."""
        self._writer.add_image(tag, np.asarray(image.convert("RGB")), global_step=step, dataformats="HWC")

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
