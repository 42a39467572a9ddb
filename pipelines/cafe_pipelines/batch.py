"""The row batch the build stages pass along, and the rules every stage follows with it.

A batch is a dict of equal-length columns (what Ray Data's `batch_format="numpy"` gives).
Every row carries its input's `status`, `reason` and `error`; a stage works only on rows
still `ok` and passes the others through untouched, so a refused input travels to the writer
and gets its status row. A stage that raises on a batch is retried row by row, so one bad
row fails alone, with reason `error.<stage>` and the exception in `error`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Batch = dict[str, Any]
# What a row's pixel columns hold once they are no longer needed, or never filled. Defined here,
# with no model code around, so that the CPU stages (compose) load without torch.
EMPTY_IMAGE = np.zeros((0, 0, 3), dtype=np.uint8)
EMPTY_MASK = np.zeros((0, 0), dtype=bool)


def num_rows(batch: Mapping[str, Any]) -> int:
    return len(batch["input_key"])


def column(batch: Batch, name: str, fill: Any) -> list[Any]:
    """A column as a Python list, created with `fill` when missing."""
    if name not in batch:
        return [fill] * num_rows(batch)
    return list(batch[name])


def active_indices(batch: Batch) -> list[int]:
    return [i for i, status in enumerate(batch["status"]) if status == "ok"]


def set_rows(batch: Batch, name: str, indices: list[int], values: list[Any], fill: Any) -> None:
    values_by_row = column(batch, name, fill)
    for i, value in zip(indices, values, strict=True):
        values_by_row[i] = value
    batch[name] = values_by_row


def refuse(batch: Batch, i: int, status: str, reason: str, error: str) -> None:
    for name, value in (("status", status), ("reason", reason), ("error", error)):
        values = column(batch, name, "")
        values[i] = value
        batch[name] = values


def run_stage(
    name: str,
    batch: Batch,
    work: Callable[[Batch, list[int]], None],
) -> Batch:
    """Apply `work(batch, indices)` to the ok rows, timing it into `t_<name>` per row.

    `work` writes its outputs with `set_rows` / `refuse`. If it raises, each row is retried
    alone and the rows that still raise are marked failed.
    """
    batch = {k: list(v) for k, v in batch.items()}  # Ray hands numpy columns; lists are editable per row
    indices = active_indices(batch)
    seconds = column(batch, f"t_{name}", 0.0)
    if indices:
        start = time.perf_counter()
        try:
            work(batch, indices)
            per_row = (time.perf_counter() - start) / len(indices)
            for i in indices:
                seconds[i] = per_row
        except Exception:  # isolate the row that breaks the batch
            for i in indices:
                start = time.perf_counter()
                try:
                    work(batch, [i])
                except Exception as exc:  # recorded in the row's status
                    refuse(batch, i, "failed", f"error.{name}", f"{type(exc).__name__}: {exc}")
                seconds[i] = time.perf_counter() - start
    batch[f"t_{name}"] = seconds
    return batch
