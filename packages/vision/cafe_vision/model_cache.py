"""The local cache of models built offline (random-init models of the real architectures).

A cached model is a folder `<cache>/<name>-<recipe hash>`. It is written into a hidden temporary
folder beside it and renamed into place when complete, so a folder under its final name is
always whole, and several processes (Ray actors starting together) may build the same model at
once: one rename wins, the others drop their copy and use the winner's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "CAFE_MODEL_CACHE"
# A temporary folder this old belongs to a builder that was killed (a build takes seconds).
STALE_TEMPORARY_S = 3600.0


def model_cache_dir() -> Path:
    """The cache root: `$CAFE_MODEL_CACHE` when set, else `~/.cache/cafe/models`."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "cafe" / "models"


def recipe_hash(recipe: dict[str, Any]) -> str:
    """8 hex characters identifying a build recipe (its JSON with sorted keys)."""
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cached_build(
    name: str,
    recipe: dict[str, Any],
    build: Callable[[Path], None],
    *,
    cache_dir: str | Path | None = None,
) -> Path:
    """The folder of model `name` built by `build(folder)`, built on the first call only.

    `recipe` is everything the build depends on (sizes, seed, library versions): its hash is part
    of the folder name, so changing the recipe builds a new folder instead of reusing a stale one.
    A finished folder is returned as is, never rewritten. Returns the final folder.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else model_cache_dir()
    final = root / f"{name}-{recipe_hash(recipe)}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, final.name)
    # Same parent as the final folder, so the rename is atomic (one file system).
    temporary = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        build(temporary)
        _check_complete(temporary, name)
        (temporary / "cafe_recipe.json").write_text(json.dumps(recipe, sort_keys=True, indent=2, default=str))
        try:
            temporary.rename(final)
        except OSError:
            # Another process renamed its copy first (the target exists and is not empty).
            if not final.is_dir():
                raise
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


def _check_complete(folder: Path, name: str) -> None:
    """Refuse a build with an empty component folder rather than cache it for every later run."""
    empty = sorted(d.name for d in folder.rglob("*") if d.is_dir() and not any(d.iterdir()))
    if empty:
        # transformers 5 saves only on torch.distributed rank 0 once a process group exists.
        raise RuntimeError(
            f"building model {name!r} left {', '.join(empty)} empty; if this is a rank > 0 of a distributed run,"
            " build the model cache before the process group starts (the cafe launchers do), e.g. run"
            " `cafe train run` for one step or load the preset once in a single process"
        )


def _remove_stale_temporaries(root: Path, final_name: str) -> None:
    """Delete the temporaries of killed builders of `final_name`; a live builder's are younger."""
    now = time.time()
    for temporary in root.glob(f".{final_name}.tmp-*"):
        try:
            if now - temporary.stat().st_mtime > STALE_TEMPORARY_S:
                shutil.rmtree(temporary, ignore_errors=True)
        except FileNotFoundError:
            pass  # another builder removed it first
