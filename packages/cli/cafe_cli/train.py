"""`cafe train ...`: train the customization model on triple shards. Imports cafe_train only when run.

    cafe train run    --shards DIR [--shards DIR ...] --output RUN [--preset tiny] [--config run.yaml] [--set K=V ...]
    cafe train launch --backend ray|accelerate --num-workers N --shards DIR --output RUN [...] [--gpu]

Settings: the YAML file, then --shards/--output/--preset, then --set overrides (any TrainConfig field, e.g.
`--set max_steps=200 --set batch_size=8`). `run` trains in this process; `launch` starts N workers
(accelerate processes or a Ray Train job) that train the same config. A RUN folder that already holds a
checkpoint is resumed, and the summary reports the steps this call ran. Exit 2 for a bad setting, a shard
set that is missing, fails validation or lacks a file of a shard, or a RUN that is a file or is, lies inside
or holds one of the shard sets; all checked before any model loads.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cafe_cli.console import EXIT_PROBLEMS, fail, out, progress

if TYPE_CHECKING:
    from cafe_train import TrainConfig

app = typer.Typer(help="Train the customization model on triple shards.", no_args_is_help=True)

DEFAULT_PRESET = "tiny"
METRICS_POLL_S = 0.25

ShardsOption = Annotated[
    list[Path] | None,
    typer.Option("--shards", "-s", help="a shard-set folder; repeat for several (or `shards:` in --config)"),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="the run folder: checkpoints/, metrics.jsonl, ...")
]
PresetOption = Annotated[
    str | None,
    typer.Option(help=f"model preset: tiny, tiny-dinov2, sd15, sd21, ... (default: --config's, else {DEFAULT_PRESET})"),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML of TrainConfig fields (a recipe)", exists=True, dir_okay=False),
]
SetsOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="KEY=VALUE override of a TrainConfig field, e.g. max_steps=200 (repeatable)"),
]


def build_config(
    *,
    shards: list[Path] | None,
    output: Path | None,
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
) -> TrainConfig:
    """The validated TrainConfig, shard sets checked too; exits 2 with the config's own message otherwise."""
    from cafe_core.settings import load_yaml, parse_sets
    from cafe_train.config import check_shards
    from cafe_train.config_io import load_train_config

    try:
        # Which required fields the file or --set give, so a missing one is reported as the option to add,
        # and --preset's default does not override a recipe's preset.
        given = set(load_yaml(config)) if config is not None else set()
        given |= set(parse_sets(sets or []))
    except ValueError as exc:
        fail(str(exc))
    if not shards and "shards" not in given:
        fail("--shards: give at least one shard-set folder (repeat --shards for several), e.g. --shards out/triples")
    if output is None and "output_dir" not in given:
        fail("--output: give the run folder to write checkpoints and metrics into, e.g. --output runs/first")
    if preset is None and "preset" not in given:
        preset = DEFAULT_PRESET
    try:
        train_config = load_train_config(config, sets=sets, shards=shards or None, output_dir=output, preset=preset)
        # train() checks these too, but only after this process has started; here it is a usage error at once.
        check_shards(train_config.shards)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    return train_config


class MetricsFollower:
    """The records a run logs to RUN/metrics.jsonl from now on, for steps after `after_step`.

    Lines already there are past runs'. A resume replaces the file (trimmed to its checkpoint's step, see
    `cafe_train.metrics_log`), so a file with another inode or a shorter one is read from the start, and
    only records past `after_step` (the step the run resumes from) count as this run's."""

    def __init__(self, path: Path, after_step: int = 0) -> None:
        self.path = path
        self.after_step = after_step
        self.inode, self.offset = self._identity()
        self.partial = b""

    def _identity(self) -> tuple[int | None, int]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None, 0
        return stat.st_ino, stat.st_size

    def read_new(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as file:
            stat = os.fstat(file.fileno())
            if stat.st_ino != self.inode or stat.st_size < self.offset:  # replaced: read it from the start
                self.inode, self.offset, self.partial = stat.st_ino, 0, b""
            file.seek(self.offset)
            chunk = file.read()
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")  # a line being written stays for next time
        records = [json.loads(line) for line in lines if line.strip()]
        return [r for r in records if r.get("step", 0) > self.after_step]


def _starting_step(run_dir: Path) -> int:
    from cafe_train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    return int(latest.name.removeprefix("step-")) if latest is not None else 0


def follow_training(config: TrainConfig, work: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]], float]:
    """Run `work()` (training in this process or a launcher's wait) under a progress bar fed by metrics.jsonl.

    Returns what `work` returned, the metrics records it logged and its wall seconds. Polling the file
    (rather than a hook in the loop) shows the same bar for in-process, accelerate and Ray runs.
    """
    from cafe_train.loop import METRICS_NAME

    start_step = _starting_step(config.output_dir)
    follower = MetricsFollower(config.output_dir / METRICS_NAME, after_step=start_step)
    records: list[dict[str, Any]] = []
    stop = threading.Event()
    with progress() as bar:
        resumed = f" (resuming at step {start_step})" if start_step else ""
        task = bar.add_task(f"loading {config.preset}{resumed}", total=config.max_steps, completed=start_step)

        def update() -> None:
            new = follower.read_new()
            if new:
                records.extend(new)
                last = new[-1]
                bar.update(task, completed=last["step"], description=f"training, loss {last['loss']:.4f}")

        def poll() -> None:
            while not stop.wait(METRICS_POLL_S):
                update()

        poller = threading.Thread(target=poll, name="cafe-train-metrics", daemon=True)
        poller.start()
        began = time.perf_counter()
        try:
            result = work()
        finally:
            stop.set()
            poller.join()
            update()
        wall_s = time.perf_counter() - began
    return result, records, wall_s


def _warn_if_random(preset_name: str) -> None:
    from cafe_model.presets import get_preset

    if get_preset(preset_name).is_random:
        out.print(
            f"[yellow]The {preset_name} preset's models are random: the training loop, its losses and checkpoints "
            "are real, but what it learns from random base models cannot draw a subject; images generated from it "
            "are noise. With the weights available, train a real preset: --preset sd15.[/]"
        )


def print_summary(
    config: TrainConfig, records: list[dict[str, Any]], wall_s: float, checkpoint: Path | None, title: str
) -> None:
    """The steps this call ran, their first and last loss, throughput, the samples passed over, and where the
    checkpoint is."""
    if not records:
        out.print(
            f"no steps run: {config.output_dir} is already at step {_starting_step(config.output_dir)} "
            f"(max_steps={config.max_steps}); raise max_steps (--set max_steps=N) to train on"
        )
    else:
        columns = ("steps", "first loss", "last loss", "samples/s", "data wait", "skipped", "flagged", "wall s")
        table = Table(*columns, title=title)
        later = records[1:] or records  # the first step includes compiling and the loader's start
        samples_per_s = sum(r["samples_per_s"] for r in later) / len(later)
        wait_share = sum(r["data_wait_share"] for r in later) / len(later)
        # Runs logged before these counts existed have none: 0, not a crash, for a resumed old run.
        num_skipped = sum(r.get("skipped_samples") or 0 for r in records)
        num_flagged = sum(r.get("flagged_samples") or 0 for r in records)
        table.add_row(
            f"{records[0]['step']}..{records[-1]['step']}",
            f"{records[0]['loss']:.4f}",
            f"{records[-1]['loss']:.4f}",
            f"{samples_per_s:.1f}",
            f"{wait_share:.0%}",
            str(num_skipped),
            str(num_flagged),
            f"{wall_s:.1f}",
        )
        out.print(table)
        if num_skipped:
            out.print(
                f"[yellow]skipped {num_skipped} unreadable sample read(s); the warnings above name each shard and key."
                " Check the sets with `cafe shards validate DIR`.[/]"
            )
        if num_flagged:
            out.print(f"passed over {num_flagged} flagged or excluded sample read(s) (the sets' flags, excluded_keys)")
    out.print(f"metrics: {config.output_dir / 'metrics.jsonl'}")
    if checkpoint is not None:
        out.print(f"checkpoint: {checkpoint}")
        out.print(
            f"Next: cafe generate --checkpoint {config.output_dir} --reference IMG --prompt TEXT --out generated.png"
        )


@app.command()
def run(
    shards: ShardsOption = None,
    output: OutputOption = None,
    preset: PresetOption = None,
    config: ConfigOption = None,
    sets: SetsOption = None,
) -> None:
    """Train in this process (CPU, or the one GPU accelerate finds), with a progress bar; resumes RUN."""
    train_config = build_config(shards=shards, output=output, preset=preset, config=config, sets=sets)
    _warn_if_random(train_config.preset)
    from cafe_train.loop import train

    try:
        result, records, wall_s = follow_training(train_config, lambda: train(train_config))
    except OSError as exc:  # a real preset's weights missing from the local cache: the message has the fix
        fail(str(exc))
    print_summary(train_config, records, wall_s, result.last_checkpoint, title=f"trained {train_config.output_dir}")


class Backend(StrEnum):
    ray = "ray"
    accelerate = "accelerate"


@app.command()
def launch(
    backend: Annotated[Backend, typer.Option(help="ray (Ray Train) or accelerate (accelerate launch)")],
    num_workers: Annotated[int, typer.Option(min=1, help="training processes (one per GPU with --gpu)")],
    shards: ShardsOption = None,
    output: OutputOption = None,
    preset: PresetOption = None,
    config: ConfigOption = None,
    sets: SetsOption = None,
    accelerate_config: Annotated[
        Path | None,
        typer.Option(help="an `accelerate config` YAML (machines, ranks); --backend accelerate only", exists=True),
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker (default: CPU workers)")] = False,
    max_failures: Annotated[
        int,
        typer.Option(min=-1, help="--backend ray: failures survived by restarting from the last checkpoint (-1: any)"),
    ] = 1,
) -> None:
    """Train with N workers: accelerate processes, or a Ray Train job (on RAY_ADDRESS's cluster, else local).

    accelerate runs on this machine, or on the machines of --accelerate-config. RUN must be a folder
    every worker can reach (a shared file system on a cluster)."""
    if accelerate_config is not None and backend is not Backend.accelerate:
        fail("--accelerate-config applies to --backend accelerate only")
    train_config = build_config(shards=shards, output=output, preset=preset, config=config, sets=sets)
    _warn_if_random(train_config.preset)
    try:
        if backend is Backend.accelerate:
            from cafe_train.launch_accelerate import launch_accelerate

            def work() -> Any:
                return launch_accelerate(train_config, num_workers, accelerate_config=accelerate_config, cpu=not gpu)
        else:
            from cafe_train.launch_ray import launch_ray

            def work() -> Any:
                return launch_ray(train_config, num_workers, use_gpu=gpu, max_failures=max_failures, storage_path=None)
    except ImportError as exc:
        fail(f"--backend {backend.value} is not available in this install: {exc}", EXIT_PROBLEMS)
    try:
        result, records, wall_s = follow_training(train_config, work)
    except (ValueError, OSError) as exc:  # launchers check their own arguments (workers vs GPUs, addresses)
        fail(str(exc))
    if backend is Backend.accelerate and isinstance(result, int) and result != 0:
        fail(f"accelerate launch exited with status {result}; the workers' errors are above", EXIT_PROBLEMS)
    from cafe_train.checkpoint import latest_checkpoint

    title = f"trained {train_config.output_dir} ({num_workers} {backend.value} workers)"
    print_summary(train_config, records, wall_s, latest_checkpoint(train_config.output_dir), title=title)
