"""`load_scorers(preset)`: the scorers of a scorer preset, whichever class implements it.

    scorers = load_scorers("toy", cache_dir=cache)      # ToyScorers; "tiny" or "base": Scorers

`Scorers` (DINO, CLIP, a grounder and a segmenter) and `ToyScorers` (the toy classifier) share one
interface: calling them on references, images, prompts and subjects, `embed_images`, `dino_embedder`,
`clip_t`, `clip_i`, `dino`, `.models`, `.preset`, `.clip.dim`. Callers that take a preset name load
through here, so a new preset kind needs no change in them.
"""

from __future__ import annotations

from pathlib import Path

from cafe_vision.scorer_presets import ScorerPreset, ToyScorerPreset, get_scorer_preset
from cafe_vision.scorers import Scorers
from cafe_vision.toy_scorers import ToyScorers


def load_scorers(
    preset: str | ScorerPreset | ToyScorerPreset,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
) -> Scorers | ToyScorers:
    """The scorers of `preset` (a name or a preset), loaded once; ValueError listing the names for an unknown one."""
    resolved = get_scorer_preset(preset) if isinstance(preset, str) else preset
    options = {"device": device, "dtype": dtype, "cache_dir": cache_dir, "batch_size": batch_size}
    if isinstance(resolved, ToyScorerPreset):
        return ToyScorers(resolved, **options)
    if isinstance(resolved, ScorerPreset):
        return Scorers(resolved, **options)
    raise TypeError(f"preset must be a scorer preset name or a preset, got {type(preset).__name__}")
