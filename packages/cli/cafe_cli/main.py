"""The `cafe` command.

    cafe demo                      the whole loop on bundled photos (tiny preset): data, a grid, training, an image
    cafe data build --input SRC --output DIR [--preset tiny|medium|base|large] [--mode ...]
    cafe shards ls|stats|show|validate|grid|index DIR
    cafe train run --shards DIR --output RUN [--preset tiny] [--config run.yaml] [--set KEY=VALUE ...]
    cafe train launch --backend ray|accelerate --num-workers N --shards DIR --output RUN [...] [--gpu]
    cafe generate --checkpoint RUN --reference IMG --prompt TEXT --out PNG [--steps 30] [--seed 0] [...]
    cafe inspect serve DIR [--host 127.0.0.1] [--port 8765] [--token TOKEN]
    cafe serve [--root DIR ...] [--db PATH] [--slots N] [--token T]   the training service (job API on Ray)
    cafe jobs submit SPEC.yaml|--kind K --set ... ; cafe jobs list|show|logs|cancel ; cafe schedules add|list|remove
    cafe improve round --checkpoint RUN --shards DIR --output DIR [--preset tiny|base] [--set KEY=VALUE ...]
    cafe loop run --config loop.yaml [--set rounds=3] [--set train.max_steps=500]
    cafe eval --checkpoint RUN --eval-set DIR [--images-per-prompt 4] [--seed 0] [--steps 30] [--out DIR]

Run `cafe --help` or `cafe COMMAND --help`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cafe_cli import data, evaluate, generate, improve, inspect, jobs, loop, schedules, serve, shards, toy, train
from cafe_cli.console import out

app = typer.Typer(
    name="cafe",
    help="cafe: data engine, training and self-improvement for subject-driven image generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(shards.app, name="shards")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(inspect.app, name="inspect")
app.command("generate")(generate.generate)
app.add_typer(improve.app, name="improve")
app.add_typer(loop.app, name="loop")
app.command("eval")(evaluate.evaluate)
app.command("serve")(serve.serve)
app.command("toy")(toy.toy)
app.add_typer(jobs.app, name="jobs")
app.add_typer(schedules.app, name="schedules")


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="folder for the demo's photos, shards and pictures")
    ] = Path("demo-output"),
) -> None:
    """The whole loop on photos bundled with scikit-image (tiny preset): build and show shards, train, generate."""
    import shutil

    from cafe_cli.demo import DEMO_TRAIN_SETS, TINY_WARNING, demo_reference, write_demo_inputs

    photos, shard_dir = output / "photos", (output / "shards").resolve()
    write_demo_inputs(photos)
    out.rule(f"cafe data build --input {photos} --output {shard_dir} --preset tiny --mode overwrite")
    out.print(f"[yellow]{TINY_WARNING}[/]")
    data.build(input=str(photos), output=shard_dir, preset="tiny", mode="overwrite", config=None, sets=None)
    out.rule(f"cafe shards stats {shard_dir}")
    shards.stats(shard_dir)
    out.rule(f"cafe shards validate {shard_dir}")
    shards.validate(shard_dir, fast=False, workers=1, as_json=False, max_shown=20)
    out.rule(f"cafe shards grid {shard_dir}")
    shards.grid(shard_dir, count=16, seed=0, columns=3, output=output / "grid.png")

    run_dir = (output / "run").resolve()
    # The shards were just rebuilt, so an earlier demo's run is stale: start it over rather than resume it.
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = " ".join(f"--set {s}" for s in DEMO_TRAIN_SETS)
    # The commands are long: the rule names the step, the line below gives the whole command to copy.
    out.rule("cafe train run")
    out.print(f"cafe train run --shards {shard_dir} --output {run_dir} --preset tiny {sets}", highlight=False)
    train.run(shards=[shard_dir], output=run_dir, preset="tiny", config=None, sets=DEMO_TRAIN_SETS)

    reference, prompt = demo_reference(shard_dir, output / "reference.png")
    generated = output / "generated.png"
    out.rule("cafe generate")
    command = f'cafe generate --checkpoint {run_dir} --reference {reference} --prompt "{prompt}" --out {generated}'
    out.print(command, highlight=False)
    generate.generate(checkpoint=run_dir, reference=reference, prompt=prompt, out_path=generated, device="cpu")

    out.print("[yellow]Reminder: with the tiny preset, captions, masks and the generated image are random.[/]")
    out.print(f"Next: `cafe shards ls {shard_dir} --keys` lists keys, `cafe shards show {shard_dir} KEY` shows one.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
