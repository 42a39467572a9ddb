"""`cafe improve round`: one self-improvement round on Ray. Imports the pipeline only when run.

    cafe improve round --checkpoint RUN --shards DIR [--shards DIR2 ...] --output DIR [--preset tiny|base]
                       [--config round.yaml] [--set KEY=VALUE ...] [--mode incremental|overwrite]

Settings are the fields of `cafe_pipelines.improve_config.ImproveConfig`: the preset's recipe
(`--preset`, else the file's `preset`, else tiny), then the `--config` YAML, then --checkpoint /
--shards / --output / --mode, then `--set` overrides (e.g. `--set filter.min_dino=0.6`). A bad value,
a run without checkpoints, a missing or invalid input set, or an output that is an input set stops
the command with exit code 2 before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cafe_cli.console import fail, out, progress

app = typer.Typer(
    help="Self-improvement: generate, score, filter and write a new round of triples.", no_args_is_help=True
)

DEFAULT_PRESET = "tiny"
PATH_SETTINGS = ("preset", "checkpoint", "shards", "output")


def _job(
    *,
    checkpoint: Path | None,
    shards: list[Path] | None,
    output: Path | None,
    preset: str | None,
    mode: str | None,
    config: Path | None,
    sets: list[str] | None,
) -> Any:
    from cafe_core.settings import load_yaml, parse_sets
    from cafe_pipelines.improve_config import apply_overrides, improve_recipe

    values = load_yaml(config) if config is not None else {}
    preset = preset or values.get("preset") or DEFAULT_PRESET
    checkpoint_value = str(checkpoint) if checkpoint is not None else values.get("checkpoint")
    shard_values = [str(s) for s in shards] if shards else values.get("shards")
    if isinstance(shard_values, str):
        shard_values = [shard_values]
    output_value = str(output) if output is not None else values.get("output")
    for flag, value in (
        ("--checkpoint RUN", checkpoint_value),
        ("--shards DIR", shard_values),
        ("--output DIR", output_value),
    ):
        if not value:
            raise ValueError(f"{flag} is required (or `{flag.split()[0][2:]}:` in --config)")
    job = improve_recipe(preset, checkpoint=str(checkpoint_value), shards=list(shard_values), output=str(output_value))
    job = apply_overrides(job, {k: v for k, v in values.items() if k not in PATH_SETTINGS})
    if mode is not None:
        job = apply_overrides(job, {"mode": mode})
    return apply_overrides(job, parse_sets(sets or []))


def _check_inputs(job: Any) -> Any:
    """The checkpoint and input sets, checked cheaply (no torch, no Ray): exit 2 naming what is wrong."""
    from cafe_core.validate import validate_set
    from cafe_model.trained import find_checkpoint

    try:
        found = find_checkpoint(job.checkpoint, weights=job.weights)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"--checkpoint {job.checkpoint}: {exc}")
    for shard_dir in job.shards:
        if not Path(shard_dir).is_dir():
            fail(f"--shards {shard_dir}: no such folder")
        try:
            result = validate_set(shard_dir, fast=True)
        except (FileNotFoundError, ValueError) as exc:
            fail(f"--shards {shard_dir}: {exc}")
        if not result.ok:
            problems = escape("; ".join(str(p) for p in result.problems[:3]))  # "[code]" is not markup
            fail(f"--shards {shard_dir}: fails `cafe shards validate --fast` ({problems})")
    return found


@app.command("round")
def round_(
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", "-c", help="a run folder (its latest checkpoint) or one step-NNNNNN folder"),
    ] = None,
    shards: Annotated[
        list[Path] | None,
        typer.Option("--shards", "-s", help="an input shard set (round k); repeat for several. Never written"),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="the new shard set (round k+1)")] = None,
    preset: Annotated[
        str | None, typer.Option(help=f"scorer preset: tiny (random, offline) or base (default: {DEFAULT_PRESET})")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="incremental (resume a killed round; the default) or overwrite")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML of ImproveConfig settings over the recipe", exists=True, dir_okay=False),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE override, e.g. filter.min_dino=0.6 or candidates_per_pair=8"),
    ] = None,
) -> None:
    """Generate candidates from the input sets' references with a checkpoint, score, filter, dedupe, and write them."""
    try:
        job = _job(
            checkpoint=checkpoint, shards=shards, output=output, preset=preset, mode=mode, config=config, sets=sets
        )
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    found = _check_inputs(job)

    from cafe_model.presets import get_preset
    from cafe_pipelines.improve_round import improve_round
    from cafe_vision.scorer_presets import get_scorer_preset

    if get_scorer_preset(job.preset).is_random or get_preset(found.preset).is_random:
        out.print(
            f"[yellow]Random models (scorers {job.preset}, generator {found.preset}): every file is real, "
            "but the images are noise and the scores mean nothing.[/]"
        )
    try:
        with progress() as bar:
            task = bar.add_task("improve round", total=None)
            report = improve_round(job, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))
    print_report(report.to_dict(), Path(job.output))


def print_report(report: dict, output: Path) -> None:
    table = Table(
        "round",
        "references",
        "pairs",
        "candidates",
        "accepted",
        "rate",
        "this run",
        "shards",
        "wall s",
        title="round report",
    )
    table.add_row(
        str(report["round"]),
        str(report["num_references"]),
        str(report["num_pairs"]),
        str(report["num_candidates"]),
        str(report["num_accepted"]),
        f"{report['acceptance_rate']:.1%}",
        str(report["candidates_this_run"]),
        str(report["shards_written"]),
        f"{report['wall_s']:.1f}",
    )
    out.print(table)
    if report["reasons"]:
        reasons = Table("reason", "candidates", title="rejected and failed per reason")
        for name, count in sorted(report["reasons"].items(), key=lambda kv: -kv[1]):
            reasons.add_row(name, str(count))
        out.print(reasons)
    stages = Table("stage", "busy s", title="stages (this run)")
    for stage, seconds in report["stage_s"].items():
        stages.add_row(stage, f"{seconds:.2f}")
    out.print(stages)
    out.print(
        f"round {report['round']} in {output}; report in {output / 'round-report.json'}, "
        f"pictures in {output / 'report'}"
    )
