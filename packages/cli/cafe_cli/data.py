"""`cafe data build`: raw images -> triple shards on Ray; `cafe data toy`: the toy world's shards and eval set.
Each imports its pipeline only when run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cafe_cli.console import fail, out, progress

app = typer.Typer(help="Build training triples: from raw images, or drawn in the toy world.", no_args_is_help=True)


@app.command()
def build(
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="a folder of images, a manifest (.parquet/.jsonl), or shards (a .tar or brace pattern)",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="the shard-set folder to write")],
    preset: Annotated[
        str, typer.Option(help="models: tiny (random, offline), medium (random, heavier), base, large")
    ] = "tiny",
    mode: Annotated[
        str, typer.Option(help="incremental (resume, new inputs only), overwrite, or extend")
    ] = "incremental",
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML of settings over the preset's recipe", exists=True, dir_okay=False),
    ] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE override, e.g. gates.min_box_score=0.3 (repeatable)")
    ] = None,
    input_roots: Annotated[
        list[Path] | None,
        typer.Option(
            "--input-root",
            help="a folder a manifest's paths (and tar shards) must resolve inside (repeatable); "
            "default: the manifest's own folder",
        ),
    ] = None,
    allow_outside_root: Annotated[
        bool,
        typer.Option("--allow-outside-root", help="read a manifest's paths wherever they lead (a manifest you trust)"),
    ] = False,
) -> None:
    """Caption, ground, segment, gate and compose (reference, prompt, target) triples into shards.

    A manifest's paths must stay inside its folder, or inside the --input-root folders; a path outside
    is recorded as `input.outside_root` and never read, unless --allow-outside-root. The output may
    not be, lie inside or hold the input. An input that lists nothing is refused (exit 2).
    """
    from cafe_core.settings import load_yaml, parse_sets
    from cafe_pipelines.build_config import apply_overrides, build_recipe
    from cafe_pipelines.build_triples import build_triples

    try:
        job = build_recipe(
            preset,
            input=input,
            output=str(output),
            mode=mode,
            input_roots=tuple(str(root) for root in input_roots or ()),
            allow_outside_root=allow_outside_root,
        )
        if config is not None:
            job = apply_overrides(job, load_yaml(config))
        job = apply_overrides(job, parse_sets(sets or []))
    except ValueError as exc:
        fail(str(exc))
    try:
        with progress() as bar:
            task = bar.add_task("building triples", total=None)
            report = build_triples(job, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    print_report(report.to_dict(), output)


@app.command()
def toy(
    output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write: train/, eval/, toy-data.json")],
    subjects: Annotated[
        int | None, typer.Option("--subjects", help="training subjects, the first N of a fixed order; default: all")
    ] = None,
    images_per_subject: Annotated[int, typer.Option("--images-per-subject", help="training triples per subject")] = 40,
    size: Annotated[int, typer.Option("--size", help="image side in px, a multiple of 8")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="draws every scene and rendering")] = 0,
    eval_images: Annotated[
        int, typer.Option("--eval-images", help="renderings per held-out subject after its reference")
    ] = 4,
) -> None:
    """Render the toy world: training triple shards (DIR/train) and a held-out eval set for `cafe eval` (DIR/eval).

    The reference of each triple is the subject cut out of another rendering (other background,
    position and size); prompts call the subject "object". A folder that already holds a set is refused.
    """
    from cafe_pipelines.toy_data import EVAL_DIR, SUMMARY_NAME, TRAIN_DIR, ToyDataConfig, make_toy_data

    try:
        config = ToyDataConfig(
            output=str(output),
            num_subjects=subjects,
            images_per_subject=images_per_subject,
            size_px=size,
            seed=seed,
            eval_images_per_subject=eval_images,
        )
        with progress() as bar:
            task = bar.add_task("rendering the toy world", total=None)
            report = make_toy_data(
                config, on_progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    except (ValueError, RuntimeError) as exc:  # RuntimeError: another writer holds the set's lock
        fail(str(exc))
    table = Table(
        "train subjects",
        "triples",
        "shards",
        "eval subjects",
        "eval images",
        "eval prompts",
        "wall s",
        title="toy data",
    )
    table.add_row(
        *(
            str(v)
            for v in (
                report.train_subjects,
                report.train_triples,
                report.train_shards,
                report.eval_subjects,
                report.eval_images,
                report.eval_prompts,
            )
        ),
        f"{report.wall_s:.1f}",
    )
    out.print(table)
    out.print(f"shards in {output / TRAIN_DIR}, eval set in {output / EVAL_DIR}, settings in {output / SUMMARY_NAME}")


def print_report(report: dict, output: Path) -> None:
    table = Table(
        "inputs listed",
        "already done",
        "processed",
        "ok",
        "samples",
        "shards",
        "wall s",
        "images/s",
        title="build report",
    )
    table.add_row(
        *(
            str(report[k])
            for k in (
                "inputs_listed",
                "inputs_already_done",
                "inputs_processed",
                "ok",
                "samples_written",
                "shards_written",
            )
        ),
        f"{report['wall_s']:.1f}",
        f"{report['images_per_s']:.2f}",
    )
    out.print(table)
    for title, counts in (("skipped per reason", report["skipped"]), ("failed per error class", report["failed"])):
        if counts:
            detail = Table("reason" if "reason" in title else "error", "inputs", title=title)
            for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
                detail.add_row(name, str(count))
            out.print(detail)
    if report["stage_images_per_s"]:
        stages = Table("stage", "images/s per actor (busy time)", title="stages")
        for stage, rate in report["stage_images_per_s"].items():
            stages.add_row(stage, f"{rate:.2f}")
        out.print(stages)
    out.print(f"shards in {output}; report saved as {output / 'build-report.json'}")
