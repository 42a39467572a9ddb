"""Vision presets: every model a data-engine job uses, by name (`tiny`, `medium`, `base`, `large`).

- `tiny`: random-init models built offline (a few ms per image and model on a CPU), for tests and the demo.
- `medium`: the same architectures at random init, sized so the three models cost at least 50 ms
  per image on a 2-core CPU even batched, for the pipeline-vs-serial benchmark.
- `base` / `large`: real weights. Captioner and grounder are hub ids loaded from the local
  Hugging Face cache; SAM checkpoints are files found in `$CAFE_SAM_CHECKPOINT_DIR` (or given).

Random models are built into the model cache on first use and loaded back through the same
`from_pretrained` / checkpoint code as real weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cafe_vision.random_blip import RandomBlipSpec, random_blip_folder
from cafe_vision.random_grounding_dino import RandomGroundingDinoSpec, random_grounding_dino_folder
from cafe_vision.random_sam import RandomSamSpec, random_sam_checkpoint
from cafe_vision.sam_checkpoint import SAM_VIT_B_CHECKPOINT, SAM_VIT_H_CHECKPOINT, SamCheckpoint
from cafe_vision.sam_model import SamArch


@dataclass(frozen=True)
class VisionPreset:
    """The models of one job and the settings that belong to them.

    captioner: a hub id / local folder, or a random BLIP built on first use.
    grounder: a hub id / local folder, or a random Grounding DINO built on first use.
    segmenter: an official SAM checkpoint (found via `$CAFE_SAM_CHECKPOINT_DIR`), or a random SAM.
    grounder_image_size_px: the square Grounding DINO's input is fitted into.
    caption_prompt: text the captions continue (conditional captioning), or None.
    caption_max_new_tokens: the longest caption, in tokens.
    """

    name: str
    captioner: str | RandomBlipSpec
    grounder: str | RandomGroundingDinoSpec
    segmenter: SamCheckpoint | RandomSamSpec
    grounder_image_size_px: int
    caption_prompt: str | None
    caption_max_new_tokens: int

    def __post_init__(self) -> None:
        if self.grounder_image_size_px < 32:
            raise ValueError(f"preset {self.name!r}: grounder_image_size_px={self.grounder_image_size_px} is below 32")
        if self.caption_max_new_tokens < 1:
            raise ValueError(f"preset {self.name!r}: caption_max_new_tokens={self.caption_max_new_tokens} is below 1")

    @property
    def is_random(self) -> bool:
        """True when any model is random-init (its outputs are not meaningful)."""
        return any(
            isinstance(model, RandomBlipSpec | RandomGroundingDinoSpec | RandomSamSpec)
            for model in (self.captioner, self.grounder, self.segmenter)
        )

    @property
    def segmenter_arch(self) -> SamArch:
        return self.segmenter.arch

    def captioner_source(self, *, cache_dir: str | Path | None = None) -> str:
        """What to pass to `Captioner`: the hub id / folder, or the random model's cache folder (built if needed)."""
        if isinstance(self.captioner, RandomBlipSpec):
            return str(random_blip_folder(self.captioner, cache_dir=cache_dir))
        return self.captioner

    def grounder_source(self, *, cache_dir: str | Path | None = None) -> str:
        """What to pass to `Grounder`: the hub id / folder, or the random model's cache folder (built if needed)."""
        if isinstance(self.grounder, RandomGroundingDinoSpec):
            return str(random_grounding_dino_folder(self.grounder, cache_dir=cache_dir))
        return self.grounder

    def segmenter_checkpoint(self, path: str | Path | None = None, *, cache_dir: str | Path | None = None) -> Path:
        """The SAM checkpoint file: `path` if given, else found via `$CAFE_SAM_CHECKPOINT_DIR`, or the random one.

        Raises FileNotFoundError with the download command when a real checkpoint is missing.
        """
        if isinstance(self.segmenter, RandomSamSpec):
            if path is not None:
                raise ValueError(
                    f"preset {self.name!r} uses a random SAM; an explicit checkpoint path needs a real preset"
                )
            return random_sam_checkpoint(self.segmenter, cache_dir=cache_dir)
        return self.segmenter.resolve(path)

    def model_records(self) -> dict[str, dict[str, str]]:
        """Role -> {name, revision} of each model, for the `models` field of a sample's metadata."""
        records = {}
        for role, model in (("captioner", self.captioner), ("grounder", self.grounder), ("segmenter", self.segmenter)):
            if isinstance(model, RandomBlipSpec | RandomGroundingDinoSpec | RandomSamSpec):
                records[role] = {"name": f"cafe-random/{model.name}", "revision": f"seed{model.seed}"}
            elif isinstance(model, SamCheckpoint):
                records[role] = {"name": f"segment-anything/{model.arch.name}", "revision": model.file_name}
            else:
                records[role] = {"name": model, "revision": "main"}
        return records


# tiny: for tests and the demo; built in about a second. Measured like `medium` below (1 thread):
# batch 1: caption 25-30, ground 15-17, segment 5-8 ms per image; batch 4: 9-12, 9-13, 4-6.
TINY = VisionPreset(
    name="tiny",
    captioner=RandomBlipSpec(
        name="blip-tiny",
        image_size_px=64,
        patch_size_px=16,
        vision_hidden_size=32,
        vision_layers=1,
        vision_heads=2,
        text_hidden_size=32,
        text_layers=1,
        text_heads=2,
    ),
    grounder=RandomGroundingDinoSpec(
        name="grounding-dino-tiny-random",
        image_size_px=128,
        swin_embed_dim=16,
        swin_depths=(1, 1, 1, 1),
        swin_heads=(1, 1, 2, 2),
        swin_window_size=4,
        text_hidden_size=32,
        text_layers=1,
        text_heads=2,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        attention_heads=2,
        num_queries=30,
    ),
    segmenter=RandomSamSpec(
        name="sam-tiny",
        arch=SamArch(
            name="sam_tiny",
            image_size_px=128,
            encoder_embed_dim=32,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=(1,),
            window_size=4,
            prompt_embed_dim=32,
            decoder_mlp_dim=64,
            decoder_num_heads=2,
            iou_head_hidden_dim=32,
        ),
    ),
    grounder_image_size_px=128,
    caption_prompt=None,
    caption_max_new_tokens=12,
)

# medium: the same architectures, sized so that the three models together cost at least 50 ms
# per 256-512 px image on 2 CPU cores even when batched, for bench/data_engine.py. Measured here
# (2 cores, torch 2.14.1, fp32, scikit-image photos at 341-512 px, one box per image for SAM;
# best of 10 runs, ms per image; this machine was shared, so 2-thread figures are from quiet moments):
#                         caption  ground  segment  all three
#   batch 1, 1 thread        120      65       15       200
#   batch 4, 1 thread         40      45       13       100
#   batch 1, 2 threads       113      35       11       160
#   batch 4, 2 threads        40      31       10        82
# Batching pays mostly in the captioner, whose per-token decoding overhead is shared by the batch.
MEDIUM = VisionPreset(
    name="medium",
    captioner=RandomBlipSpec(
        name="blip-medium",
        image_size_px=128,
        patch_size_px=16,
        vision_hidden_size=128,
        vision_layers=2,
        vision_heads=2,
        text_hidden_size=128,
        text_layers=2,
        text_heads=2,
    ),
    grounder=RandomGroundingDinoSpec(
        name="grounding-dino-medium-random",
        image_size_px=256,
        swin_embed_dim=32,
        swin_depths=(1, 1, 2, 1),
        swin_heads=(1, 2, 2, 4),
        swin_window_size=7,
        text_hidden_size=64,
        text_layers=2,
        text_heads=2,
        d_model=64,
        encoder_layers=1,
        decoder_layers=2,
        attention_heads=4,
        num_queries=50,
    ),
    segmenter=RandomSamSpec(
        name="sam-medium",
        arch=SamArch(
            name="sam_medium",
            image_size_px=256,
            encoder_embed_dim=96,
            encoder_depth=2,
            encoder_num_heads=3,
            encoder_global_attn_indexes=(1,),
            prompt_embed_dim=64,
            decoder_mlp_dim=256,
            decoder_num_heads=2,
            iou_head_hidden_dim=64,
        ),
    ),
    grounder_image_size_px=256,
    caption_prompt=None,
    caption_max_new_tokens=20,
)

BASE = VisionPreset(
    name="base",
    captioner="Salesforce/blip-image-captioning-large",
    grounder="IDEA-Research/grounding-dino-tiny",
    segmenter=SAM_VIT_B_CHECKPOINT,
    grounder_image_size_px=1024,
    caption_prompt="a photography of",
    caption_max_new_tokens=30,
)

LARGE = VisionPreset(
    name="large",
    captioner="Salesforce/blip-image-captioning-large",
    grounder="IDEA-Research/grounding-dino-base",
    segmenter=SAM_VIT_H_CHECKPOINT,
    grounder_image_size_px=1024,
    caption_prompt="a photography of",
    caption_max_new_tokens=30,
)

PRESETS: dict[str, VisionPreset] = {preset.name: preset for preset in (TINY, MEDIUM, BASE, LARGE)}


def get_preset(name: str) -> VisionPreset:
    """The preset called `name`; ValueError listing the allowed names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown vision preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
