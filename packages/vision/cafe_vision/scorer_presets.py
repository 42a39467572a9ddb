"""Scorer presets: the models that score generated candidates (self-improvement filter, `cafe eval`), by name.

- `tiny`: a random small DINO ViT, a random small CLIP with CLIP's real tokenizer, and the data
  engine's `tiny` grounder and segmenter; built offline in seconds, for tests and the demo. Its
  scores are random functions of the pixels (the copy-paste score is pixel-based and meaningful).
- `base`: real weights, as the DreamBooth / CAFE evaluations use them: DINO ViT-S/16
  (`facebook/dino-vits16`), CLIP ViT-B/32 (`openai/clip-vit-base-patch32`), and the data engine's
  `base` Grounding DINO and SAM. Hub ids load from the local Hugging Face cache only.
- `toy`: for the toy world (`cafe_core.toy`) only: a small CNN trained once on renderer output reads
  each image's subject and scene, and the scores are exact agreements with the reference and the prompt
  (`cafe_vision.toy_scorers.ToyScorers`; `cafe_vision.load_scorers.load_scorers` picks the class).

`SCORER_PRESETS` holds the presets `Scorers` builds; `get_scorer_preset` and `SCORER_PRESET_NAMES`
know the toy preset too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cafe_vision.model_cache import recipe_hash
from cafe_vision.presets import VisionPreset, get_preset
from cafe_vision.random_clip import RandomClipSpec, random_clip_folder
from cafe_vision.random_dino import RandomDinoSpec, random_dino_folder
from cafe_vision.toy_classifier import TOY_CLASSIFIER, ToyClassifierSpec


@dataclass(frozen=True)
class ScorerPreset:
    """The models of the scorers and the settings that belong to them.

    dino: a hub id / local folder of a `ViTModel` (DINO), or a random one built on first use.
    clip: a hub id / local folder of a `CLIPModel` with its processor, or a random one built on first use.
    vision: the data-engine preset whose grounder and segmenter find the subject in a candidate.
    box_threshold / text_threshold: the grounder's; `num_instances` counts boxes above `box_threshold`.
    nms_iou_threshold: class-agnostic NMS over the subject's boxes before they are counted.
    grounder_image_size_px: the square a candidate is fitted into for grounding (None: the vision
        preset's). Candidates are the generator's size, smaller than the photos the data engine
        grounds: each preset upsamples them about 1.5x (`base`: to Grounding DINO's own 800 px).
    """

    name: str
    dino: str | RandomDinoSpec
    clip: str | RandomClipSpec
    vision: VisionPreset
    box_threshold: float
    text_threshold: float
    nms_iou_threshold: float
    grounder_image_size_px: int | None = None

    def __post_init__(self) -> None:
        if self.grounder_image_size_px is not None and self.grounder_image_size_px < 32:
            raise ValueError(
                f"scorer preset {self.name!r}: grounder_image_size_px={self.grounder_image_size_px} is below 32"
            )
        for field, value in (
            ("box_threshold", self.box_threshold),
            ("text_threshold", self.text_threshold),
            ("nms_iou_threshold", self.nms_iou_threshold),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"scorer preset {self.name!r}: {field}={value} must lie in [0, 1]")

    @property
    def is_random(self) -> bool:
        """True when any model is random-init (its scores are not meaningful)."""
        return isinstance(self.dino, RandomDinoSpec) or isinstance(self.clip, RandomClipSpec) or self.vision.is_random

    def dino_source(self, *, cache_dir: str | Path | None = None) -> str:
        """What to pass to `DinoEmbedder`: the hub id / folder, or the random model's cache folder (built if needed)."""
        if isinstance(self.dino, RandomDinoSpec):
            return str(random_dino_folder(self.dino, cache_dir=cache_dir))
        return self.dino

    def clip_source(self, *, cache_dir: str | Path | None = None) -> str:
        """What to pass to `ClipScorer`: the hub id / folder, or the random model's cache folder (built if needed)."""
        if isinstance(self.clip, RandomClipSpec):
            return str(random_clip_folder(self.clip, cache_dir=cache_dir))
        return self.clip

    def model_records(self) -> dict[str, dict[str, str]]:
        """Role -> {name, revision} of each model (dino, clip, grounder, segmenter), for samples' metadata."""
        records = {}
        for role, model in (("dino", self.dino), ("clip", self.clip)):
            if isinstance(model, RandomDinoSpec | RandomClipSpec):
                records[role] = {"name": f"cafe-random/{model.name}", "revision": f"seed{model.seed}"}
            else:
                records[role] = {"name": model, "revision": "main"}
        vision_records = self.vision.model_records()
        records["grounder"] = vision_records["grounder"]
        records["segmenter"] = vision_records["segmenter"]
        return records


TINY = ScorerPreset(
    name="tiny",
    dino=RandomDinoSpec(
        name="dino-vit-tiny-random", image_size_px=64, patch_size_px=16, hidden_size=32, layers=2, heads=2
    ),
    clip=RandomClipSpec(
        name="clip-tiny-random",
        image_size_px=64,
        patch_size_px=16,
        vision_hidden_size=32,
        vision_layers=2,
        vision_heads=2,
        text_hidden_size=32,
        text_layers=2,
        text_heads=2,
        projection_dim=32,
    ),
    vision=get_preset("tiny"),
    # The random grounder's best scores lie around 0.7-0.97 on the test photos: this keeps a few
    # boxes per image, and none on some, so both cases reach the code downstream.
    box_threshold=0.85,
    text_threshold=0.25,
    nms_iou_threshold=0.5,
    # The tiny generator draws 64 px candidates; the data engine's 128 px would upsample them 2x.
    grounder_image_size_px=96,
)

BASE = ScorerPreset(
    name="base",
    dino="facebook/dino-vits16",
    clip="openai/clip-vit-base-patch32",
    vision=get_preset("base"),
    # Grounding DINO's own defaults, and its processor's 800 px (the largest of its training
    # scales) for 512 px candidates, where the data engine fits photos into 1024.
    box_threshold=0.35,
    text_threshold=0.25,
    nms_iou_threshold=0.5,
    grounder_image_size_px=800,
)

SCORER_PRESETS: dict[str, ScorerPreset] = {preset.name: preset for preset in (TINY, BASE)}


@dataclass(frozen=True)
class ToyScorerPreset:
    """The toy world's scorers: one classifier trained on renderer output (see `cafe_vision.toy_scorers`).

    classifier: what the classifier is trained with (the recipe of its cache folder).
    """

    name: str
    classifier: ToyClassifierSpec

    @property
    def is_random(self) -> bool:
        """False: the classifier is trained, and its scores are measurements."""
        return False

    def model_records(self) -> dict[str, dict[str, str]]:
        """{"classifier": {name, revision}}: the revision is the hash of its training recipe (its cache key)."""
        return {
            "classifier": {
                "name": f"cafe-toy/{self.classifier.name}",
                "revision": recipe_hash(self.classifier.recipe()),
            }
        }


TOY = ToyScorerPreset(name="toy", classifier=TOY_CLASSIFIER)

SCORER_PRESET_NAMES: tuple[str, ...] = (*SCORER_PRESETS, TOY.name)


def get_scorer_preset(name: str) -> ScorerPreset | ToyScorerPreset:
    """The scorer preset called `name`; ValueError listing the allowed names otherwise."""
    if name == TOY.name:
        return TOY
    try:
        return SCORER_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown scorer preset {name!r}; choose one of: {', '.join(SCORER_PRESET_NAMES)}") from None
