"""The `cafe` command.

    cafe demo                      the data engine on bundled photos (tiny preset), stats, a grid
    cafe data build --input SRC --output DIR [--preset tiny|medium|base|large] [--mode ...]
    cafe shards ls|stats|show|validate|grid|index DIR
    cafe inspect serve DIR [--host 127.0.0.1] [--port 8765] [--token TOKEN]

Run `cafe --help` or `cafe COMMAND --help`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cafe_cli import data, inspect, shards
from cafe_cli.console import out

app = typer.Typer(
    name="cafe",
    help="cafe: data engine, training and self-improvement for subject-driven image generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(shards.app, name="shards")
app.add_typer(data.app, name="data")
app.add_typer(inspect.app, name="inspect")


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="folder for the demo's photos, shards and pictures")
    ] = Path("demo-output"),
) -> None:
    """Run the data engine on photos bundled with scikit-image (tiny preset), then show the shards."""
    from cafe_cli.demo import TINY_WARNING, write_demo_inputs

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
    out.print("[yellow]Reminder: tiny-preset captions and masks are random, not meaningful.[/]")
    out.print(f"Next: `cafe shards ls {shard_dir} --keys` lists keys, `cafe shards show {shard_dir} KEY` shows one.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
