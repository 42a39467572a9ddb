"""`cafe loop run`: the self-improvement loop, train ⇄ improve for N rounds. Imports cafe_loop only when run.

    cafe loop run --config loop.yaml [--set rounds=3] [--set train.max_steps=500] [--set improve.num_steps=20]

The config is `cafe_loop.loop_config.LoopConfig` as YAML (output, shards, preset required; rounds,
min_acceptance_rate, real_to_generated, scorer_preset; `train` and `improve` mappings of TrainConfig and
ImproveConfig fields). `--set` reaches into the mappings with dots. Run it again on the same output and it
continues where it stopped. Prints one line per phase and a table of the rounds; OUTPUT/loop-report.json
holds the same. Exit 2 for a bad setting or a missing shard set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cafe_cli.console import fail, out

app = typer.Typer(help="The self-improvement loop: train, generate, filter, retrain.", no_args_is_help=True)


def _fmt(value: object, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML of LoopConfig fields (see `cafe_loop.loop_config`)", dir_okay=False),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE override, e.g. rounds=3 or train.max_steps=200 (repeatable)"),
    ] = None,
) -> None:
    """Train on the real sets, then improve and retrain for N rounds; resumes OUTPUT."""
    from cafe_loop.loop_config import load_loop_config

    if config is not None and not config.is_file():
        fail(f"--config {config}: no such file")
    try:
        loop_config = load_loop_config(config, sets=sets)
        from cafe_train.config import check_shards

        check_shards(loop_config.shards)  # before any model loads: a bad set is a usage error
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    from cafe_model.presets import get_preset

    if get_preset(loop_config.preset).is_random:
        out.print(
            f"[yellow]The {loop_config.preset} preset's models are random: every round's files are real, but the "
            "generated images are noise and the scores mean nothing.[/]"
        )
    from cafe_loop.loop import LOOP_REPORT_NAME, run_loop

    try:
        report = run_loop(loop_config, on_progress=lambda line: out.print(line, highlight=False))
    except OSError as exc:  # a real preset's weights missing from the local cache: the message has the fix
        fail(str(exc))
    columns = ("round", "candidates", "accepted", "rate", "train samples", "steps", "last loss")
    table = Table(*columns, title=f"{report.output} (stop: {report.stop_reason})")
    for record in report.rounds:
        steps = None if record.last_step is None else f"{record.first_step}..{record.last_step}"
        samples = None if record.set_samples is None else sum(record.set_samples.values())
        table.add_row(
            str(record.round),
            _fmt(record.num_candidates),
            _fmt(record.num_accepted),
            _fmt(record.acceptance_rate, ".1%"),
            _fmt(samples),
            _fmt(steps),
            _fmt(record.last_loss, ".4f"),
        )
    out.print(table)
    out.print(f"stopped: {report.stop_detail}")
    out.print(f"report: {Path(report.output) / LOOP_REPORT_NAME}; each round's pictures: ROUND/report/")
    if report.final_checkpoint:
        out.print(f"final checkpoint: {report.final_checkpoint}")
        out.print(f"Next: cafe eval --checkpoint {report.final_checkpoint} --eval-set DIR")
