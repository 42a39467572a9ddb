"""Torch threads per stage actor."""

from __future__ import annotations


def set_threads(num_threads: int | None) -> None:
    """Give this process's torch `num_threads` intra-op threads (None: leave torch's default).

    Called in a model stage's `__init__`, i.e. once per Ray actor process: actors sharing a
    machine must not each spin up one thread per core, or they slow each other down several
    times over (measured on 2 cores with other work running).
    """
    if num_threads is None:
        return
    if num_threads < 1:
        raise ValueError(f"num_threads: {num_threads} must be >= 1")
    import torch

    torch.set_num_threads(num_threads)
