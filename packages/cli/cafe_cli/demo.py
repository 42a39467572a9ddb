"""`cafe demo`: the whole loop on real photos that ship with scikit-image, with the tiny preset.

Writes the photos (and two broken files, to show how bad inputs are recorded) to
`OUTPUT/photos`, builds `OUTPUT/shards` with `cafe data build`'s job, shows the set's stats,
validation and a contact sheet, trains the tiny model for a few steps on the set into `OUTPUT/run`
(`cafe train run`), then generates `OUTPUT/generated.png` from one triple's reference (`cafe generate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = {
    "astronaut": data.astronaut,
    "cat": data.chelsea,
    "coffee": data.coffee,
    "rocket": data.rocket,
    "cameraman": data.camera,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
    "horse": lambda: (~data.horse()).astype(np.uint8) * 255,
}

TINY_WARNING = (
    "The tiny preset's models are random (built offline from small configs, with a fixed seed): "
    "the pipeline, the shards and every file in them are real, but its captions are gibberish and "
    "its boxes and masks are noise. With the weights available (a GPU machine with hub access), "
    "run a real preset: cafe data build --input PHOTOS --output SHARDS --preset base "
    "(set CAFE_SAM_CHECKPOINT_DIR to the folder holding sam_vit_b_01ec64.pth)."
)


# A few steps at the tiny preset's 64 px: tens of seconds on 2 cores. The demo set holds a handful of
# samples, so an epoch is a batch or two: loader processes would restart every epoch (num_workers=0), and
# the default 1000-sample shuffle buffer would be refilled from the few tars every epoch (shuffle_buffer=16).
DEMO_TRAIN_SETS = [
    "max_steps=20",
    "resolution_px=64",
    "batch_size=4",
    "num_workers=0",
    "shuffle_buffer=16",
    "checkpoint_every=20",
    "keep_checkpoints=1",
]


def demo_reference(shard_dir: Path, path: Path) -> tuple[Path, str]:
    """The first triple's reference cut-out, written to `path`, and a prompt naming its subject."""
    from cafe_core import TripleReader

    triple = next(iter(TripleReader(shard_dir)), None)
    if triple is None:
        raise ValueError(f"{shard_dir}: the demo set has no samples to take a reference from")
    path.parent.mkdir(parents=True, exist_ok=True)
    triple.reference.save(path)
    return path, f"a photo of {triple.metadata['subject']} on a beach"


def write_demo_inputs(folder: Path) -> None:
    """The bundled photos as JPEGs, plus a truncated file and a text file named like an image."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, load in PHOTOS.items():
        path = folder / f"{name}.jpg"
        if not path.exists():
            Image.fromarray(load()).convert("RGB").save(path, quality=92)
    cat = (folder / "cat.jpg").read_bytes()
    (folder / "broken_download.jpg").write_bytes(cat[: len(cat) // 3])
    (folder / "notes.jpg").write_text("not a photo\n")
