"""The toy world's data: training triples drawn by `cafe_core.toy`, and a held-out evaluation set.

    report = make_toy_data(ToyDataConfig(output="toy/"))      # or: cafe data toy --output toy/

Written under `output`:

    train/            a shard set in the data contract, written through cafe_core's writer (validate it
                      with `cafe shards validate toy/train`)
    eval/             a DreamBench-style set that `cafe eval` reads (cafe_pipelines.evaluate):
      <slug>/00-reference.png   per held-out subject (slug of its phrase: red-striped-star), an RGBA
                                cut-out (alpha = the exact mask) of one rendering
      <slug>/01.png ...         `eval_images_per_subject` more renderings of it (RGB), other scenes
      prompts_object.txt        one line per scene of `EVAL_SCENES`, `{}` for the subject words
      subjects.json             {slug: {"class": "object", "kind": "object", shape, colour, pattern}}
    toy-data.json     the settings, the counts, the train and eval subjects, the eval prompts;
                      written last, so its presence marks a finished run

Training triples: for each training subject (all of `train_subjects()`, or the first `num_subjects`
of `SUBJECT_ORDER`), `images_per_subject` triples. The target is the subject rendered in a random
scene that `in_training(subject, background)` allows; the reference is the subject cut out of
another rendering, in a scene whose background, position and size all differ from the target's
(so the model cannot copy pixels, not even the background left under the cut-out's clear alpha),
framed as the data engine frames references (`cafe_vision.compose.compose_reference`). The prompt
is `scene_prompt(scene)`, naming the subject only as "object" (the reference must carry its
identity); `caption` is the full caption. `KEY.json` records both renderings (scene and seed) under
`toy`, so each image can be drawn again with `cafe_core.toy.render`.

Every scene and seed derives from `seed`, the subject's index in `all_subjects()` and the image's
index, never from `num_subjects`: the same settings give the same bytes, and a smaller run's
triples are those of a larger run. Triples are written image-major (image 0 of every subject,
then image 1, ...), so every shard mixes all subjects, whatever the loader's shuffle buffer.

No Ray: a rendering costs well under a millisecond, less than starting Ray would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cafe_core import SCHEMA_VERSION, InputStatus, ShardSet, Triple, make_key
from cafe_core.eval_layout import SUBJECTS_JSON_NAME, prompts_file_name
from cafe_core.layout import DATASET_NAME, find_prefixes
from cafe_core.toy import (
    SUBJECT_WORD,
    Rendering,
    Scene,
    Subject,
    all_scenes,
    all_subjects,
    caption,
    held_out_scene_pairs,
    held_out_subjects,
    in_training,
    render,
    scene_prompt,
    train_subjects,
)
from cafe_core.toy.render import MAX_SIZE_PX, MIN_SIZE_PX
from cafe_vision.compose import DEFAULT_MARGIN, compose_reference, mask_image

RENDERER = "cafe_core.toy"
TRAIN_DIR = "train"
EVAL_DIR = "eval"
SUMMARY_NAME = "toy-data.json"
REFERENCE_NAME = "00-reference.png"
EVAL_CLASS = SUBJECT_WORD
EVAL_KIND = "object"
PROMPTS_NAME = prompts_file_name(EVAL_KIND)
SUBJECTS_NAME = SUBJECTS_JSON_NAME
# Image sides are multiples of 8: the latent diffusion models downsample by 8.
SIZE_MULTIPLE_PX = 8

# The held-out test scenes of the eval set: every background once, every position and every size
# twice, and no (position, size) pair twice, so a per-prompt score shows each factor separately.
EVAL_SCENES: tuple[Scene, ...] = (
    Scene("grass", "left", "small"),
    Scene("sand", "centre", "medium"),
    Scene("snow", "right", "large"),
    Scene("night_sky", "left", "medium"),
    Scene("brick_wall", "centre", "large"),
    Scene("water", "right", "small"),
)

# The order `num_subjects` takes training subjects in, fixed and seed-independent: each next subject
# is the one whose shape, colour and pattern have been taken least so far (ties: a fixed shuffle), so
# that a few subjects already cover the vocabulary (6 cover every shape, 8 every colour), where
# train_subjects() runs shape by shape.
_ORDER_SEED = 15


def _balanced_order(subjects: tuple[Subject, ...]) -> tuple[Subject, ...]:
    left = [subjects[i] for i in np.random.default_rng(_ORDER_SEED).permutation(len(subjects))]
    taken: dict[str, int] = {}
    order = []
    while left:
        best = min(left, key=lambda s: taken.get(s.shape, 0) + taken.get(s.colour, 0) + taken.get(s.pattern, 0))
        left.remove(best)
        order.append(best)
        for word in (best.shape, best.colour, best.pattern):
            taken[word] = taken.get(word, 0) + 1
    return tuple(order)


SUBJECT_ORDER: tuple[Subject, ...] = _balanced_order(train_subjects())

# Random streams of one seed: training triples and eval renderings never share a draw.
_TRAIN_STREAM, _EVAL_STREAM = 0, 1
_SEED_LIMIT = 2**31
_SUBJECT_INDEX = {subject: i for i, subject in enumerate(all_subjects())}


def subject_slug(subject: Subject) -> str:
    """The folder name of a subject: its phrase with hyphens, e.g. "red-striped-star"."""
    return subject.phrase.replace(" ", "-")


def renderer_record() -> dict[str, str]:
    """The `models` entry of the renderer: its module and the cafe release that drew the pixels."""
    return {"name": RENDERER, "revision": f"cafe-{importlib.metadata.version('cafe')}"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ToyDataConfig:
    """Settings of one `cafe data toy` run; checked on construction, before anything is written.

    output: the folder to write (train/, eval/, toy-data.json); must not hold a toy data set or shards.
    num_subjects: training subjects, the first N of `SUBJECT_ORDER`; None = all of them.
    images_per_subject: training triples per subject.
    size_px: image side of every rendering (a multiple of 8, from the renderer's minimum up).
    seed: draws every scene and rendering seed.
    eval_images_per_subject: renderings after the reference in each eval subject's folder.
    samples_per_shard: training triples per shard (the last one may hold fewer).
    """

    output: str
    num_subjects: int | None = None
    images_per_subject: int = 40
    size_px: int = 32
    seed: int = 0
    eval_images_per_subject: int = 4
    samples_per_shard: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.output, str) or not self.output.strip():
            raise ValueError("output: give the folder to write, e.g. --output toy-data")
        available = len(SUBJECT_ORDER)
        if self.num_subjects is not None and (
            not _is_int(self.num_subjects) or not 1 <= self.num_subjects <= available
        ):
            raise ValueError(
                f"subjects: {self.num_subjects!r} is out of range; give 1 to {available} (the training subjects), "
                "or leave it out for all of them"
            )
        if not _is_int(self.images_per_subject) or self.images_per_subject < 1:
            raise ValueError(f"images-per-subject: {self.images_per_subject!r} must be an integer >= 1")
        if (
            not _is_int(self.size_px)
            or self.size_px % SIZE_MULTIPLE_PX
            or not MIN_SIZE_PX <= self.size_px <= MAX_SIZE_PX
        ):
            raise ValueError(
                f"size: {self.size_px!r} must be a multiple of {SIZE_MULTIPLE_PX} from {MIN_SIZE_PX} to "
                f"{MAX_SIZE_PX} px (e.g. 32; below {MIN_SIZE_PX} px a small subject loses its shape)"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed: {self.seed!r} must be an integer >= 0")
        most = len(all_scenes()) - 1  # each eval image in a scene of its own, the reference's included
        if not _is_int(self.eval_images_per_subject) or not 1 <= self.eval_images_per_subject <= most:
            raise ValueError(f"eval-images: {self.eval_images_per_subject!r} must be an integer from 1 to {most}")
        if not _is_int(self.samples_per_shard) or self.samples_per_shard < 1:
            raise ValueError(f"samples_per_shard: {self.samples_per_shard!r} must be an integer >= 1")

    @property
    def subjects(self) -> tuple[Subject, ...]:
        """The training subjects of this run, in `SUBJECT_ORDER`."""
        return SUBJECT_ORDER[: self.num_subjects] if self.num_subjects is not None else SUBJECT_ORDER


@dataclass
class ToyDataReport:
    """What a run wrote; `to_dict` is what toy-data.json holds besides the settings and lists."""

    train_subjects: int = 0
    train_triples: int = 0
    train_shards: int = 0
    eval_subjects: int = 0
    eval_images: int = 0  # references included
    eval_prompts: int = 0
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "wall_s"}


def _rendering_record(rendering: Rendering) -> dict[str, Any]:
    return {"scene": dataclasses.asdict(rendering.scene), "seed": rendering.seed, "box_xyxy": list(rendering.box_xyxy)}


def training_scenes(subject: Subject) -> tuple[Scene, ...]:
    """The scenes training data may show `subject` in (`in_training` on each background)."""
    return tuple(scene for scene in all_scenes() if in_training(subject, scene.background))


def _apart(scene: Scene, other: Scene) -> bool:
    return scene.background != other.background and scene.position != other.position and scene.size != other.size


def _draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, _SEED_LIMIT))


def plan_triple(subject: Subject, image_index: int, seed: int) -> tuple[Scene, int, Scene, int]:
    """(target scene, target seed, reference scene, reference seed) of one training triple."""
    rng = np.random.default_rng([seed, _TRAIN_STREAM, _SUBJECT_INDEX[subject], image_index])
    scenes = training_scenes(subject)
    target_scene = scenes[int(rng.integers(len(scenes)))]
    others = [scene for scene in scenes if _apart(scene, target_scene)]
    reference_scene = others[int(rng.integers(len(others)))]
    return target_scene, _draw_seed(rng), reference_scene, _draw_seed(rng)


def cut_out(rendering: Rendering) -> Image.Image:
    """The subject of `rendering` cut out: RGBA, alpha = its exact mask, framed as the data engine frames references."""
    image = Image.fromarray(np.asarray(rendering.image), "RGB")
    return compose_reference(image, np.asarray(rendering.mask), rendering.box_xyxy, DEFAULT_MARGIN)


def toy_triple(subject: Subject, image_index: int, config: ToyDataConfig) -> tuple[InputStatus, Triple]:
    """Training triple `image_index` of `subject`, with its status row (see the module doc)."""
    target_scene, target_seed, reference_scene, reference_seed = plan_triple(subject, image_index, config.seed)
    target = render(subject, target_scene, size_px=config.size_px, seed=target_seed)
    source = render(subject, reference_scene, size_px=config.size_px, seed=reference_seed)
    input_key = f"{subject_slug(subject)}/{image_index:04d}"
    uri = f"{RENDERER} seed={config.seed}"
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "subject": SUBJECT_WORD,
        "caption": caption(subject, target_scene),
        "box_xyxy": list(target.box_xyxy),
        # The renderer knows the truth: the box and the mask are exact, not estimates.
        "scores": {"box": 1.0, "mask_iou": 1.0},
        "gates": [],
        # sha256 of the target's pixels (H x W x 3 bytes) as drawn, before the JPEG encoding.
        "source": {
            "uri": uri,
            "sha256": hashlib.sha256(np.asarray(target.image).tobytes()).hexdigest(),
            "input_key": input_key,
        },
        "models": {"renderer": renderer_record()},
        "round": 0,
        "toy": {
            "subject": dataclasses.asdict(subject),
            "size_px": config.size_px,
            "target": _rendering_record(target),
            "reference": _rendering_record(source),
        },
    }
    triple = Triple(
        key=make_key(f"{uri} size_px={config.size_px} {input_key}", 0),
        target=Image.fromarray(np.asarray(target.image), "RGB"),
        reference=cut_out(source),
        mask=mask_image(np.asarray(target.mask)),
        prompt=scene_prompt(target_scene),
        metadata=metadata,
    )
    return InputStatus.ok(input_key, source_uri=uri), triple


def check_output(output: Path) -> None:
    """Refuse an output that already holds a toy data set, a shard set, or is a file; say what to do."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output}: is a file; give a folder (new or empty)")
    held = [output / name for name in (TRAIN_DIR, EVAL_DIR, SUMMARY_NAME) if (output / name).exists()]
    if find_prefixes(output) or (output / DATASET_NAME).exists():
        held.insert(0, output)
    if held:
        raise ValueError(
            f"--output {output}: already holds a shard set or toy data ({', '.join(str(p) for p in held)}); "
            "sets are never overwritten: pass another --output, or remove it first"
        )


ProgressHook = Callable[[int, int], None]  # (steps done, steps in all): training triples, then eval subjects


def write_train(config: ToyDataConfig, root: Path, report: ToyDataReport, step: Callable[[int], None]) -> None:
    """The training shard set under `root`; its counts go into `report`."""
    subjects = config.subjects
    big = 1 << 62  # samples_per_shard, not bytes or inputs, decides where shards end
    lineage = {"job": "toy-data", "renderer": renderer_record(), "config": dataclasses.asdict(config)}
    shard_set = ShardSet(root)
    with shard_set.writer(
        mode="overwrite", lineage=lineage, max_samples=config.samples_per_shard, max_bytes=big, max_inputs=big
    ) as writer:
        for image_index in range(config.images_per_subject):
            for subject in subjects:
                status, triple = toy_triple(subject, image_index, config)
                writer.add(status, [triple])
            step(len(subjects))
    report.train_subjects = len(subjects)
    report.train_triples = len(subjects) * config.images_per_subject
    report.train_shards = len(writer.written)


def eval_prompts() -> tuple[str, ...]:
    """The lines of prompts_object.txt: each scene of `EVAL_SCENES` with `{}` for the subject words."""
    return tuple(scene_prompt(scene, "{}") for scene in EVAL_SCENES)


def eval_renderings(subject: Subject, config: ToyDataConfig) -> list[Rendering]:
    """The reference's rendering, then `eval_images_per_subject` more, each in a scene of its own."""
    rng = np.random.default_rng([config.seed, _EVAL_STREAM, _SUBJECT_INDEX[subject]])
    scenes = all_scenes()
    picked = rng.choice(len(scenes), size=1 + config.eval_images_per_subject, replace=False)
    return [render(subject, scenes[int(i)], size_px=config.size_px, seed=_draw_seed(rng)) for i in picked]


def write_eval(config: ToyDataConfig, root: Path, report: ToyDataReport, step: Callable[[int], None]) -> None:
    """The held-out evaluation set under `root` (layout in the module doc)."""
    root.mkdir(parents=True)
    entries: dict[str, dict[str, str]] = {}
    for subject in held_out_subjects():
        slug = subject_slug(subject)
        folder = root / slug
        folder.mkdir()
        reference, *others = eval_renderings(subject, config)
        cut_out(reference).save(folder / REFERENCE_NAME)
        for number, rendering in enumerate(others, start=1):
            Image.fromarray(np.asarray(rendering.image), "RGB").save(folder / f"{number:02d}.png")
        entries[slug] = {"class": EVAL_CLASS, "kind": EVAL_KIND, **dataclasses.asdict(subject)}
        report.eval_images += 1 + len(others)
        step(1)
    prompts = eval_prompts()
    header = f"# {RENDERER} held-out test scenes: every background, each position and size twice\n"
    (root / PROMPTS_NAME).write_text(header + "\n".join(prompts) + "\n")
    (root / SUBJECTS_NAME).write_text(json.dumps(entries, indent=1) + "\n")
    report.eval_subjects = len(entries)
    report.eval_prompts = len(prompts)


def _phrases(subjects: Sequence[Subject]) -> list[str]:
    return [subject.phrase for subject in subjects]


def make_toy_data(config: ToyDataConfig, on_progress: ProgressHook | None = None) -> ToyDataReport:
    """Write the toy data set of `config` (see the module doc); `on_progress(done, total)` as it goes.

    Raises ValueError, before writing anything, when the output already holds a set.
    """
    started = time.monotonic()
    output = Path(config.output)
    check_output(output)
    report = ToyDataReport()
    total = len(config.subjects) * config.images_per_subject + len(held_out_subjects())
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        if on_progress is not None:
            on_progress(done, total)

    write_train(config, output / TRAIN_DIR, report, step)
    write_eval(config, output / EVAL_DIR, report, step)
    summary = {
        "renderer": renderer_record(),
        "settings": dataclasses.asdict(config),
        "counts": report.counts(),
        "layout": {"train": f"{TRAIN_DIR}/", "eval": f"{EVAL_DIR}/"},
        "train_subjects": _phrases(config.subjects),
        "eval_subjects": {subject_slug(s): s.phrase for s in held_out_subjects()},
        "eval_prompts": list(eval_prompts()),
        "held_out_scene_pairs": [[name, subject.phrase] for name, subject in held_out_scene_pairs()],
    }
    # Last, so a crashed run leaves no summary (and the next run refuses its leftovers by name).
    (output / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n")
    report.wall_s = round(time.monotonic() - started, 3)
    return report
