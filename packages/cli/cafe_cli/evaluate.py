"""`cafe eval`: DINO, CLIP-I and CLIP-T of a trained run on a DreamBench-style set. Imports models only when run.

    cafe eval --checkpoint RUN --eval-set dreambench/ [--images-per-prompt 4] [--seed 0] [--steps 30]
              [--preset base] [--out RUN/eval/step-NNNNNN]

The set's layout and what is measured: `cafe_pipelines.evaluate` (DIR/<subject>/ photos, DIR/prompts_object.txt
and DIR/prompts_live.txt with `{}` for the class phrase, DIR/subjects.json or subjects.txt). Prints a table
(one row per subject, then the mean over subjects) and writes OUT/eval.csv, OUT/eval.json and the images
under OUT/images/. --preset is the scorer preset (`tiny`: random models, `base`: DINO ViT-S/16 and CLIP
ViT-B/32); by default `tiny` for a run of a random model preset, else `base`. Exit 2 for a bad layout,
a missing checkpoint or a bad option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cafe_cli.console import fail, out, progress

SIZE_MULTIPLE_PX = 8


def _default_out(checkpoint_path: Path, step: int) -> Path:
    # RUN/checkpoints/step-N -> RUN/eval/step-N: the numbers sit in the run they measure.
    run_dir = checkpoint_path.parent.parent
    return run_dir / "eval" / f"step-{step:06d}"


def evaluate(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", help="a run folder (latest checkpoint) or one step-NNNNNN folder")
    ],
    eval_set: Annotated[
        Path, typer.Option("--eval-set", "-e", help="DIR/<subject>/ photos, prompts_{object,live}.txt, subjects.json")
    ],
    images_per_prompt: Annotated[int, typer.Option(min=1, help="images generated per prompt (one seeded batch)")] = 4,
    seed: Annotated[int, typer.Option(help="the seed of every prompt's batch: same seed, same numbers")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="sampler steps (DDIM)")] = 30,
    guidance: Annotated[float, typer.Option(help="guidance scale (text and reference)")] = 7.5,
    size: Annotated[int | None, typer.Option(help="image side in pixels (default: the preset's)")] = None,
    preset: Annotated[
        str | None, typer.Option(help="scorer preset: tiny or base (default: tiny for a random model, else base)")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="folder for eval.csv, eval.json, images/")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cuda when present)")] = None,
) -> None:
    """Generate every subject in every prompt of an evaluation set and score DINO, CLIP-I and CLIP-T."""
    from cafe_model.presets import get_preset
    from cafe_model.trained import find_checkpoint
    from cafe_pipelines.evaluate import read_eval_set
    from cafe_vision.scorer_presets import get_scorer_preset

    if size is not None and (size < SIZE_MULTIPLE_PX or size % SIZE_MULTIPLE_PX):
        fail(f"--size {size}: must be a positive multiple of {SIZE_MULTIPLE_PX}")
    try:
        found = find_checkpoint(checkpoint)
        evaluation_set = read_eval_set(eval_set)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    scorer_name = preset or get_preset(found.preset).default_scorers
    try:
        get_scorer_preset(scorer_name)
    except ValueError as exc:
        fail(f"--preset: {exc}")
    out_dir = out_dir or _default_out(found.path, found.step)

    import torch

    from cafe_model.trained import load_trained_pipeline
    from cafe_pipelines.evaluate import evaluate as run_evaluation
    from cafe_vision.load_scorers import load_scorers

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available here; use --device cpu")
    with progress() as bar:
        bar.add_task(f"loading {found.preset} + {found.path.name}, scorers {scorer_name}", total=None)
        try:
            pipeline, found = load_trained_pipeline(found.path, device=device)
            scorers = load_scorers(scorer_name, device=device)
        except (OSError, ValueError) as exc:  # missing weights (the message has the download command), a misfit
            fail(str(exc))
    settings = {"checkpoint": str(found.path), "step": found.step, "preset": found.preset}
    with progress() as bar:
        total = sum(len(evaluation_set.prompts[s.kind]) for s in evaluation_set.subjects) * images_per_prompt
        task = bar.add_task("generating", total=total)

        def on_progress(subject: str, done: int, _total: int) -> None:
            bar.update(task, completed=done, description=f"generating {subject}")

        try:
            result = run_evaluation(
                pipeline,
                scorers,
                evaluation_set,
                out_dir=out_dir,
                images_per_prompt=images_per_prompt,
                seed=seed,
                num_steps=steps,
                text_guidance=guidance,
                size_px=size,
                settings=settings,
                on_progress=on_progress,
            )
        except ValueError as exc:  # an unreadable photo
            fail(str(exc))
    table = Table(
        "subject", "class", "kind", "images", "DINO", "CLIP-I", "CLIP-T",
        title=f"{found.path} (step {found.step}) on {eval_set}",
    )  # fmt: skip
    for row in [*result.rows, result.overall]:
        table.add_row(
            row["subject"],
            row["class"],
            row["kind"],
            str(row["num_images"]),
            f"{row['dino']:.3f}",
            f"{row['clip_i']:.3f}",
            f"{row['clip_t']:.2f}",
            end_section=row is result.rows[-1],
        )
    out.print(table)
    out.print(f"wrote {result.csv_path}, {result.json_path} and {out_dir / 'images'}")
    if get_preset(found.preset).is_random or scorers.preset.is_random:
        out.print("[yellow]Random models (a tiny preset): the numbers exercise the evaluation, measure nothing.[/]")
