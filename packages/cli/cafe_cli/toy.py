"""`cafe toy`: the toy world end to end (`cafe_loop.toy_experiment`). Imports it only when run.

    cafe toy --output runs/toy [--steps-per-round 600] [--rounds 1] [--seed 0] [--set train.lr=5e-4]

Renders the toy data, trains the toy preset, runs a self-improvement round with the toy scorers,
trains on, and evaluates each round on held-out subjects; prints the table and writes
OUTPUT/toy-report.json, toy-plot.png and toy-grid.png. Run it again on the same output to resume.
Exit 2 for a bad setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cafe_cli.console import fail, out


def toy(
    output: Annotated[Path, typer.Option("--output", "-o", help="the run folder (data/, loop/, eval/, the report)")],
    steps_per_round: Annotated[
        int | None, typer.Option("--steps-per-round", help="training steps per round (default 600)")
    ] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="improve rounds after round 0 (default 1)")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="the data's, training's and rounds' seed (default 0)")
    ] = None,
    eval_subjects: Annotated[
        int | None, typer.Option("--eval-subjects", help="evaluate the first N held-out subjects (default: all 28)")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE of ToyConfig, e.g. train.lr=5e-4 or improve.num_references=64"),
    ] = None,
) -> None:
    """The toy world end to end: data, train, improve, retrain, evaluate on held-out subjects."""
    from cafe_core.settings import check_fields, parse_sets
    from cafe_loop.toy_experiment import REPORT_NAME, ToyConfig, run_toy

    flags = {"steps_per_round": steps_per_round, "rounds": rounds, "seed": seed, "eval_subjects": eval_subjects}
    try:
        values = {"output": output, **{k: v for k, v in flags.items() if v is not None}, **parse_sets(sets or [])}
        check_fields(ToyConfig, values, "toy")
        config = ToyConfig(**values)
    except ValueError as exc:
        fail(str(exc))
    try:
        report = run_toy(config, on_progress=lambda line: out.print(line, highlight=False))
    except ValueError as exc:  # data made with other settings in OUTPUT
        fail(str(exc))
    table = Table("row", "identity", "own", "text", "shape", "colour", "pattern", title=str(config.output))
    for row in report["table"]:
        table.add_row(
            row["row"], *(f"{row[name]:.3f}" for name in ("identity", "own", "text", "shape", "colour", "pattern"))
        )
    chance = report["chance"]
    table.add_row("chance", f"{chance['identity']:.3f}", "", f"{chance['text']:.3f}", "", "", "", end_section=True)
    out.print(table)
    wall = report["wall_s"]["total"]
    out.print(f"report: {config.output / REPORT_NAME}; pictures: toy-plot.png, toy-grid.png ({wall:.0f} s)")
