"""A SAM at random init, built offline and saved as a state_dict `.pth` like the official checkpoints.

`Segmenter` loads it through `load_sam(arch, checkpoint)`, the path real checkpoints take. Its
masks are random: only the shapes and the cost are real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from cafe_vision.model_cache import cached_build
from cafe_vision.sam_model import SamArch, build_sam

# Bump when the build changes in a way the spec does not capture: it is part of the cache key.
BUILD_VERSION = 1
CHECKPOINT_FILE = "sam.pth"


@dataclass(frozen=True)
class RandomSamSpec:
    """A random-init SAM: its architecture and seed; `name` names the cache folder."""

    name: str
    arch: SamArch
    seed: int = 0


def build_random_sam(spec: RandomSamSpec, folder: Path) -> None:
    """Write the state_dict of a random-init SAM to `folder / CHECKPOINT_FILE` (deterministic in `spec.seed`)."""
    # fork_rng: the fixed seed must not reset the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        sam = build_sam(spec.arch)
    torch.save(sam.state_dict(), folder / CHECKPOINT_FILE)


def random_sam_checkpoint(spec: RandomSamSpec, *, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint file of the random SAM `spec`, built on first use; load it with `load_sam(spec.arch, path)`."""
    recipe = {"builder": "sam", "version": BUILD_VERSION, "segment_anything": version("segment-anything")}
    recipe.update(asdict(spec))
    folder = cached_build(spec.name, recipe, lambda folder: build_random_sam(spec, folder), cache_dir=cache_dir)
    return folder / CHECKPOINT_FILE
