"""Load each model of a preset into its wrapper: the one place a preset's settings meet the wrappers.

A pipeline stage calls one of these in its `__init__` (once per actor), e.g.
`self.grounder = load_grounder(get_preset("tiny"), box_threshold=0.3)`. Keyword overrides go to
the wrapper and win over the preset's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cafe_vision.captioner import Captioner
from cafe_vision.grounder import Grounder
from cafe_vision.presets import VisionPreset
from cafe_vision.segmenter import Segmenter


def load_captioner(
    preset: VisionPreset, *, device: str | torch.device = "cpu", cache_dir: str | Path | None = None, **overrides: Any
) -> Captioner:
    """The preset's `Captioner`; `overrides` are `Captioner` keyword arguments."""
    settings: dict[str, Any] = {"max_new_tokens": preset.caption_max_new_tokens, "prompt": preset.caption_prompt}
    settings.update(overrides)
    return Captioner(preset.captioner_source(cache_dir=cache_dir), device=device, **settings)


def load_grounder(
    preset: VisionPreset, *, device: str | torch.device = "cpu", cache_dir: str | Path | None = None, **overrides: Any
) -> Grounder:
    """The preset's `Grounder`; `overrides` are `Grounder` keyword arguments."""
    settings: dict[str, Any] = {"image_size_px": preset.grounder_image_size_px}
    settings.update(overrides)
    return Grounder(preset.grounder_source(cache_dir=cache_dir), device=device, **settings)


def load_segmenter(
    preset: VisionPreset,
    *,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> Segmenter:
    """The preset's `Segmenter`; `checkpoint` overrides where a real SAM checkpoint is found.

    `overrides` are `Segmenter` keyword arguments.
    """
    path = preset.segmenter_checkpoint(checkpoint, cache_dir=cache_dir)
    return Segmenter(path, preset.segmenter_arch, device=device, **overrides)
