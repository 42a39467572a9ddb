"""Evaluation on a DreamBench-style set: DINO, CLIP-I and CLIP-T of images a trained model draws.

    eval_set = read_eval_set("dreambench/")
    pipeline, checkpoint = load_trained_pipeline("runs/sd15")
    result = evaluate(pipeline, Scorers("base"), eval_set, out_dir="runs/sd15/eval/step-020000",
                      images_per_prompt=4, seed=0, num_steps=30)
    result.overall    # {"dino": 0.61, "clip_i": 0.79, "clip_t": 30.2, ...}

The set's layout (DreamBooth's dataset, with its prompt lists as files):

    DIR/<subject>/*.jpg|*.jpeg|*.png    the subject's real photos; the first by name is the reference
    DIR/prompts_object.txt             one prompt per line, `{}` where the subject's class phrase goes
    DIR/prompts_live.txt               the same for live subjects (animals, people)
    DIR/subjects.json                  {"dog": {"class": "dog", "kind": "live"}, "backpack": {...}}
      or DIR/subjects.txt              lines `subject,class phrase,kind` (kind: live or object)

Every subject folder needs an entry and every entry a folder with at least one image; the prompts file
of each kind in use must exist. In prompts files, blank lines and lines starting with `#` are skipped.
A bad layout raises ValueError (or FileNotFoundError) naming the file or folder and what is expected.

What is generated: for each subject and each prompt of its kind (with `{}` replaced by the class phrase),
`images_per_prompt` images, one batch drawn with `seed` (so image i is the same whatever else is
evaluated), from the subject's first photo as the reference. The reference is the whole photo as RGBA
with full alpha: no segmentation, so nothing in the number depends on a grounder's or segmenter's luck
(a model trained on cut-outs sees the photo's background too; segment the photos first for cut-outs).
A first image that is already a cut-out (RGBA with some transparent pixels, as `cafe data toy` writes
`00-reference.png`) is the reference as it is, and the scores compare with the subject's other photos
only: a cut-out's hidden background is not a photo of the subject.

The scores, per generated image, as the DreamBooth paper defines them:
    dino    mean over the subject's real photos of the cosine of DINO ViT CLS embeddings (whole images)
    clip_i  the same with CLIP image embeddings
    clip_t  CLIP-T of the image and its prompt (the class phrase filled in), 100 * max(cos, 0)
A subject's score is the mean over its images; `overall` is the mean over subjects (each weighs the same).

Written to `out_dir`: `eval.csv` (one row per subject, then `overall`), `eval.json` (the same, the settings,
the scorers' models and every image's scores) and `images/<subject>/<prompt:03d>-<i>.png`.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cafe_core.eval_layout import KINDS, SUBJECTS_JSON_NAME, SUBJECTS_TEXT_NAME, prompts_file_name
from cafe_vision.scorers import Scorers

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PLACEHOLDER = "{}"
METRICS = ("dino", "clip_i", "clip_t")
CSV_NAME = "eval.csv"
JSON_NAME = "eval.json"
OVERALL = "overall"


@dataclass(frozen=True)
class EvalSubject:
    """One subject of the set: its folder name, the phrase prompts name it by, live or object, its photos."""

    name: str
    class_phrase: str
    kind: str
    image_paths: tuple[Path, ...]


@dataclass(frozen=True)
class EvalSet:
    root: Path
    subjects: tuple[EvalSubject, ...]
    prompts: dict[str, tuple[str, ...]]  # kind -> prompt templates with `{}`

    def prompts_for(self, subject: EvalSubject) -> list[str]:
        return [template.replace(PLACEHOLDER, subject.class_phrase) for template in self.prompts[subject.kind]]


def read_eval_set(root: str | Path) -> EvalSet:
    """The subjects and prompts of a DreamBench-style folder (layout in the module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"eval set {str(root)!r}: no such folder")
    entries = _read_subject_entries(root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = sorted(set(entries) - set(folders))
    if missing:
        raise ValueError(f"eval set {root}: subject(s) {', '.join(missing)} listed but no folder of that name")
    unlisted = [name for name in folders if name not in entries]
    if unlisted:
        raise ValueError(
            f"eval set {root}: folder(s) {', '.join(unlisted)} have no entry in the subjects file; add"
            f" `{unlisted[0]},<class phrase>,<live|object>` (or remove the folder)"
        )
    subjects = []
    for name in folders:
        class_phrase, kind = entries[name]
        images = tuple(sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        if not images:
            raise ValueError(f"eval set {root}: {root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        subjects.append(EvalSubject(name, class_phrase, kind, images))
    if not subjects:
        raise ValueError(f"eval set {root}: no subjects (expected folders {root}/<subject>/ with photos)")
    prompts = {kind: _read_prompts(root / prompts_file_name(kind)) for kind in sorted({s.kind for s in subjects})}
    return EvalSet(root=root, subjects=tuple(subjects), prompts=prompts)


def _read_subject_entries(root: Path) -> dict[str, tuple[str, str]]:
    """subject folder -> (class phrase, kind), from subjects.json or subjects.txt."""
    json_path, text_path = root / SUBJECTS_JSON_NAME, root / SUBJECTS_TEXT_NAME
    if json_path.is_file() and text_path.is_file():
        raise ValueError(f"eval set {root}: both subjects.json and subjects.txt; keep one")
    raw: list[tuple[str, Any, Any, str]] = []  # name, class, kind, where
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{json_path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError(f'{json_path}: expected {{"<subject>": {{"class": "dog", "kind": "live"}}, ...}}')
        for name, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f'{json_path}: {name!r}: expected {{"class": "<phrase>", "kind": "live|object"}}')
            raw.append((name, entry.get("class"), entry.get("kind"), f"{json_path}: {name!r}"))
    elif text_path.is_file():
        for number, line in enumerate(text_path.read_text().splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [part.strip() for part in line.split(",")]
            if len(parts) != 3:
                raise ValueError(f"{text_path}:{number}: {line!r}: expected `subject,class phrase,live|object`")
            raw.append((parts[0], parts[1], parts[2], f"{text_path}:{number}"))
    else:
        raise FileNotFoundError(
            f"eval set {root}: no subjects.json or subjects.txt mapping each subject folder to its class phrase"
            " and kind (live or object)"
        )
    entries: dict[str, tuple[str, str]] = {}
    for name, class_phrase, kind, where in raw:
        if not isinstance(class_phrase, str) or not class_phrase.strip():
            raise ValueError(f"{where}: the class phrase is missing (e.g. `dog`, `red backpack`)")
        if kind not in KINDS:
            raise ValueError(f"{where}: kind {kind!r} must be one of {', '.join(KINDS)}")
        if name in entries:
            raise ValueError(f"{where}: subject {name!r} listed twice")
        entries[name] = (class_phrase.strip(), kind)
    return entries


def _read_prompts(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; one prompt per line, `{{}}` for the subject, e.g. `a {{}} on sand`")
    prompts = tuple(
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    )
    if not prompts:
        raise ValueError(f"{path}: no prompts in it")
    without = [prompt for prompt in prompts if PLACEHOLDER not in prompt]
    if without:
        raise ValueError(f"{path}: prompt {without[0]!r} has no `{{}}` where the subject's class phrase goes")
    return prompts


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGBA") if image.mode in ("RGBA", "LA", "PA") else image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def _reference_and_real(paths: tuple[Path, ...]) -> tuple[Image.Image, list[Image.Image]]:
    """(the reference, the real photos the scores compare with): see the module docstring."""
    first, *others = [_open(path) for path in paths]
    if first.mode == "RGBA" and first.getchannel("A").getextrema()[0] < 255 and others:
        return first, [image.convert("RGB") for image in others]
    real = [first.convert("RGB"), *(image.convert("RGB") for image in others)]
    return real[0].convert("RGBA"), real  # the whole photo, full alpha


@dataclass
class EvalResult:
    """Per-subject rows, the overall row (means over subjects) and every image's scores."""

    out_dir: Path
    rows: list[dict[str, Any]]
    overall: dict[str, Any]
    images: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def csv_path(self) -> Path:
        return self.out_dir / CSV_NAME

    @property
    def json_path(self) -> Path:
        return self.out_dir / JSON_NAME


ProgressHook = Callable[[str, int, int], None]  # (subject, images done, images in all)


def evaluate(
    pipeline: Any,
    scorers: Scorers,
    eval_set: EvalSet,
    *,
    out_dir: str | Path,
    images_per_prompt: int = 4,
    seed: int = 0,
    num_steps: int = 30,
    text_guidance: float = 7.5,
    size_px: int | None = None,
    settings: dict[str, Any] | None = None,
    on_progress: ProgressHook | None = None,
) -> EvalResult:
    """Generate with `pipeline` (a `CustomizationPipeline`) and score with `scorers`; write and return the result.

    `settings` (e.g. the checkpoint and its step) are saved in eval.json beside this call's own.
    Same pipeline, scorers, set and arguments: the same numbers (generation is seeded, scoring deterministic).
    """
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"images_per_prompt={images_per_prompt!r}: must be an integer >= 1")
    out_dir = Path(out_dir)
    total = sum(len(eval_set.prompts[s.kind]) for s in eval_set.subjects) * images_per_prompt
    done = 0
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    image_records: list[dict[str, Any]] = []
    for subject in eval_set.subjects:
        reference, real = _reference_and_real(subject.image_paths)
        real_dino = scorers.dino_embedder(real)  # (R, D), rows of norm 1
        real_clip = scorers.embed_images(real)
        subject_dir = out_dir / "images" / subject.name
        subject_dir.mkdir(parents=True, exist_ok=True)
        scores: dict[str, list[float]] = {metric: [] for metric in METRICS}
        for prompt_index, prompt in enumerate(eval_set.prompts_for(subject)):
            if on_progress is not None:
                on_progress(subject.name, done, total)
            images = pipeline(
                reference,
                prompt,
                num_steps=num_steps,
                text_guidance=text_guidance,
                reference_guidance=text_guidance,
                seed=seed,
                height_px=size_px,
                width_px=size_px,
                batch_size=images_per_prompt,
            )
            dino = (scorers.dino_embedder(images) @ real_dino.T).mean(axis=1)
            clip_i = (scorers.embed_images(images) @ real_clip.T).mean(axis=1)
            clip_t = scorers.clip_t(images, [prompt] * len(images))
            for index, image in enumerate(images):
                path = subject_dir / f"{prompt_index:03d}-{index}.png"
                image.save(path)
                record = {"dino": float(dino[index]), "clip_i": float(clip_i[index]), "clip_t": float(clip_t[index])}
                for metric in METRICS:
                    scores[metric].append(record[metric])
                image_records.append(
                    {
                        "subject": subject.name,
                        "prompt_index": prompt_index,
                        "prompt": prompt,
                        "image_index": index,
                        "path": str(path.relative_to(out_dir)),
                        **record,
                    }
                )
            done += len(images)
        rows.append(
            {
                "subject": subject.name,
                "class": subject.class_phrase,
                "kind": subject.kind,
                "num_real_images": len(real),
                "num_prompts": len(eval_set.prompts[subject.kind]),
                "num_images": len(scores["dino"]),
                **{metric: float(np.mean(values)) for metric, values in scores.items()},
            }
        )
    overall = {
        "subject": OVERALL,
        "class": "",
        "kind": "",
        "num_real_images": sum(row["num_real_images"] for row in rows),
        "num_prompts": sum(row["num_prompts"] for row in rows),
        "num_images": sum(row["num_images"] for row in rows),
        **{metric: float(np.mean([row[metric] for row in rows])) for metric in METRICS},
    }
    run_settings = {
        **(settings or {}),
        "eval_set": str(eval_set.root),
        "images_per_prompt": images_per_prompt,
        "seed": seed,
        "num_steps": num_steps,
        "text_guidance": text_guidance,
        "size_px": size_px,
        "scorer_preset": scorers.preset.name,
        "scorer_models": scorers.models,
        "wall_s": round(time.perf_counter() - began, 3),
    }
    result = EvalResult(out_dir=out_dir, rows=rows, overall=overall, images=image_records, settings=run_settings)
    _write(result)
    return result


def _write(result: EvalResult) -> None:
    result.out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(result.overall)
    with open(result.csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows([*result.rows, result.overall])
    record = asdict(result)
    record["out_dir"] = str(result.out_dir)
    result.json_path.write_text(json.dumps(record, indent=1))
