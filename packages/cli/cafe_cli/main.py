"""The `cafe` command.

    cafe demo                      build a shard set from bundled photos, print stats, write a grid
    cafe shards ls|stats|show|validate|grid|index DIR

Run `cafe --help` or `cafe COMMAND --help`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cafe_cli import data, shards
from cafe_cli.console import out

app = typer.Typer(
    name="cafe",
    help="cafe: data engine, training and self-improvement for subject-driven image generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(shards.app, name="shards")
app.add_typer(data.app, name="data")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the demo's shard set and pictures")] = Path(
        "demo-output"
    ),
) -> None:
    """Build a shard set from real photos bundled with scikit-image, then show its stats and a grid."""
    from cafe_cli.demo import build_demo_set  # scikit-image and scipy only when the demo runs

    shard_dir = output / "shards"
    out.rule("cafe demo: building triples from scikit-image's photos")
    out.print(
        "Subjects are named by hand and masks come from a classical threshold (Otsu): the data "
        "engine with captioning, grounding and segmentation replaces this step."
    )
    build_demo_set(shard_dir)
    out.rule(f"cafe shards stats {shard_dir}")
    shards.stats(shard_dir.resolve())
    out.rule(f"cafe shards validate {shard_dir}")
    shards.validate(shard_dir.resolve(), fast=False, workers=1, as_json=False, max_shown=20)
    out.rule(f"cafe shards grid {shard_dir}")
    shards.grid(shard_dir.resolve(), count=16, seed=0, columns=3, output=output / "grid.png")
    out.print(f"\nNext: `cafe shards ls {shard_dir} --keys` lists keys, `cafe shards show {shard_dir} KEY` shows one.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
