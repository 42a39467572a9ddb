"""`from_pretrained` for hub ids and local folders alike, with a fix in the error when weights are absent.

These machines reach no model hub: a hub id loads only from the local Hugging Face cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def load_pretrained(loader: Callable[..., T], name_or_path: str | Path, **kwargs: object) -> T:
    """`loader(name_or_path, **kwargs)`, re-raising a missing-weights error with what to do about it."""
    try:
        return loader(str(name_or_path), **kwargs)
    except OSError as error:
        if Path(name_or_path).exists():
            raise
        raise OSError(
            f"could not load {str(name_or_path)!r}: it is not a local folder and its files are not in the local "
            "Hugging Face cache (this machine may not reach the hub). Fix: on a machine with network run "
            f"`hf download {name_or_path}` and copy the cache (HF_HOME) here, or pass a local folder "
            "saved with save_pretrained."
        ) from error
