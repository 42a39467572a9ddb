"""The self-improvement loop: train on real triples, then N rounds of generate ⇄ filter ⇄ retrain.

    from cafe_loop import load_loop_config, run_loop
    report = run_loop(load_loop_config("loop.yaml"))          # or: cafe loop run --config loop.yaml
    report.stop_reason, [r.acceptance_rate for r in report.rounds]

What it does in OUTPUT (= `config.output`):

    round-0/train/            the model trained on the real sets (`train.max_steps` steps)
    round-0/report/train.json that training's summary: steps, first and last loss, checkpoint, sets, weights
    round-r/shards/           round r's generated set: `improve_round` with round r-1's last checkpoint over
                              the real sets and every generated set so far (its round-report.json, report/)
    round-r/report/           the round's acceptance: round-report.json and the improve round's histograms
                              and example grids (copied), then train.json of the retraining
    round-r/train/            the model retrained on the real sets + all generated sets so far, mixed
                              real:generated = `real_to_generated` (TrainConfig.shard_weights)
    loop-config.json          the config of the latest call, for people
    loop-report.json          every round's acceptance rate, sample counts and checkpoint, and why it stopped

The loop stops after `rounds` rounds, or at the first round whose acceptance rate is below
`min_acceptance_rate` or that accepted nothing (that round's set is kept, and not trained on).

Retraining continues the previous round's model: round r's run starts from a copy of round r-1's last
checkpoint (`round-r/train/checkpoints/step-N`, copied as a whole and renamed into place, so it is
complete or absent) and trains on to (r + 1) * `train.max_steps` steps, resuming weights, EMA, optimizer,
schedule, RNGs and data position from it. Why a copy and not resuming round r-1's own run with more
steps: every round keeps its own immutable run, so the checkpoint round r's samples name in their
metadata stays on disk (a resumed run would prune it with `keep_checkpoints`), each run's config and
metrics describe one training mix, and a round can be evaluated or redone on its own.

Resuming: run it again on the same OUTPUT and it continues where it stopped. A training whose run already
holds a checkpoint at its target step is not run again (a killed one resumes from its last checkpoint), an
improve round whose report was copied into round-r/report/ is done (a killed one is rerun, and
`improve_round` is incremental: it redoes no finished shard). With a larger `rounds` a finished loop
goes on from its last round; a loop stopped for low acceptance stops there again unless the floor changes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cafe_core.index import read_index
from cafe_core.layout import detect_layout
from cafe_loop.loop_config import LoopConfig
from cafe_pipelines.improve_round import improve_round
from cafe_train.checkpoint import latest_checkpoint
from cafe_train.config import TrainConfig
from cafe_train.loop import METRICS_NAME, train

LOOP_REPORT_NAME = "loop-report.json"
LOOP_CONFIG_NAME = "loop-config.json"
ROUND_REPORT_NAME = "round-report.json"  # written by improve_round into its output
TRAIN_SUMMARY_NAME = "train.json"

STOP_ROUNDS_DONE = "rounds_done"
STOP_LOW_ACCEPTANCE = "low_acceptance"
STOP_NOTHING_ACCEPTED = "nothing_accepted"

Progress = Callable[[str], None]


@dataclass
class RoundRecord:
    """One round: its training (all rounds) and, for r >= 1, the improve round before it."""

    round: int
    # The improve round (None for round 0).
    generated_set: str | None = None
    num_candidates: int | None = None
    num_accepted: int | None = None
    acceptance_rate: float | None = None
    reasons: dict[str, int] | None = None  # reason code -> candidates turned away (filter.*, dedupe.*, error.*)
    improve_checkpoint: str | None = None
    # The training (None when the loop stopped before it).
    train_run: str | None = None
    train_sets: list[str] | None = None
    shard_weights: list[float] | None = None
    set_samples: dict[str, int] | None = None  # set -> samples in it
    first_step: int | None = None
    last_step: int | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    checkpoint: str | None = None
    report_dir: str | None = None


@dataclass
class LoopReport:
    """What the loop did so far; `stop_reason` is one of rounds_done, low_acceptance, nothing_accepted."""

    output: str
    rounds: list[RoundRecord] = field(default_factory=list)
    stop_reason: str | None = None
    stop_detail: str | None = None
    final_checkpoint: str | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_json(path: Path, value: Any) -> None:
    """Write via a hidden temporary and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(value, indent=1, default=str))
    temp.replace(path)


def set_num_samples(root: Path) -> int:
    """A closed set's sample count, from its shardindex.json."""
    return sum(int(entry.get("nsamples", 0)) for entry in read_index(detect_layout(root))["shardlist"])


def mix_weights(real: dict[Path, int], generated: dict[Path, int], real_to_generated: float) -> list[float]:
    """One weight per set (real ones first, in order): the real sets together draw `real_to_generated` samples
    per generated one; within each group a set weighs its sample count (every sample of a group equally likely).
    """
    real_total, generated_total = sum(real.values()), sum(generated.values())
    real_share = real_to_generated / (real_to_generated + 1.0)
    weights = [real_share * n / real_total for n in real.values()]
    weights += [(1.0 - real_share) * n / generated_total for n in generated.values()]
    return weights


def _checkpoint_step(path: Path | None) -> int:
    return int(path.name.removeprefix("step-")) if path is not None else 0


def seed_run(run_dir: Path, start: Path) -> None:
    """Copy checkpoint `start` into `run_dir/checkpoints/` (whole, then renamed), unless the run has one already."""
    if latest_checkpoint(run_dir) is not None:
        return
    target = run_dir / "checkpoints" / start.name
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{start.name}.*.tmp"):  # a copy killed half-way
        shutil.rmtree(stale, ignore_errors=True)
    temp = target.with_name(f".{start.name}.{os.getpid()}.tmp")  # hidden: never taken for a checkpoint
    shutil.copytree(start, temp)
    temp.rename(target)


def _losses(run_dir: Path, first_step: int, last_step: int) -> tuple[float | None, float | None]:
    """The logged losses of the first and last step in (first_step, last_step] (metrics.jsonl)."""
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return None, None
    losses = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if first_step < record["step"] <= last_step:
                losses[record["step"]] = record["loss"]
    if not losses:
        return None, None
    return losses[min(losses)], losses[max(losses)]


def _train_round(config: TrainConfig, first_step: int, record: RoundRecord, report_dir: Path, say: Progress) -> Path:
    """Train one round's run from `first_step` to `config.max_steps` unless its run is there already; fills
    `record`, writes report_dir/train.json and returns the run's last checkpoint."""
    run_dir = config.output_dir
    summary_path = report_dir / TRAIN_SUMMARY_NAME
    latest = latest_checkpoint(run_dir)
    began = time.perf_counter()
    if latest is not None and _checkpoint_step(latest) >= config.max_steps:
        say(f"round {record.round}: training done ({latest})")
    else:
        say(
            f"round {record.round}: training {run_dir} to step {config.max_steps}"
            f" (from step {_checkpoint_step(latest)})"
        )
        train(config)  # resumes from the run's latest checkpoint (the seeded copy, or where a killed run stopped)
        latest = latest_checkpoint(run_dir)
    if summary_path.is_file() and json.loads(summary_path.read_text())["checkpoint"] == str(latest):
        summary = json.loads(summary_path.read_text())
    else:
        last_step = _checkpoint_step(latest)
        first_loss, last_loss = _losses(run_dir, first_step, last_step)
        summary = {
            "train_run": str(run_dir),
            "train_sets": [str(s) for s in config.shards],
            "shard_weights": config.shard_weights,
            "set_samples": {str(s): set_num_samples(s) for s in config.shards},
            "first_step": first_step,
            "last_step": last_step,
            "first_loss": first_loss,
            "last_loss": last_loss,
            "checkpoint": str(latest),
            "wall_s": round(time.perf_counter() - began, 3),
        }
        write_json(summary_path, summary)
    for name in (
        "train_run", "train_sets", "shard_weights", "set_samples", "first_step", "last_step", "first_loss", "last_loss",
        "checkpoint",
    ):  # fmt: skip
        setattr(record, name, summary[name])
    return Path(summary["checkpoint"])


def _improve(config: LoopConfig, round_: int, checkpoint: Path, inputs: list[Path], say: Progress) -> dict[str, Any]:
    """Run (or find done) round `round_`'s improve round; returns its round report as saved, copied to report/."""
    report_dir = config.round_dir(round_) / "report"
    copied = report_dir / ROUND_REPORT_NAME
    if copied.is_file():
        say(f"round {round_}: improve round done ({copied})")
        return json.loads(copied.read_text())
    output = config.round_dir(round_) / "shards"
    say(f"round {round_}: improve round with {checkpoint} over {len(inputs)} set(s) into {output}")
    improve_round(config.round_improve_config(checkpoint, inputs, output))
    report_dir.mkdir(parents=True, exist_ok=True)
    pictures = output / "report"
    if pictures.is_dir():
        for path in sorted(pictures.iterdir()):
            if path.is_file():
                shutil.copy2(path, report_dir / path.name)
    # Copied last: its presence in report/ marks the improve round done.
    shutil.copy2(output / ROUND_REPORT_NAME, report_dir / f".{ROUND_REPORT_NAME}.tmp")
    (report_dir / f".{ROUND_REPORT_NAME}.tmp").replace(copied)
    return json.loads(copied.read_text())


def run_loop(config: LoopConfig, *, on_progress: Progress | None = None) -> LoopReport:
    """Round 0's training, then up to `config.rounds` improve + retrain rounds; see the module doc.

    Writes OUTPUT/loop-report.json after every phase and returns the final report. `on_progress` gets
    one line per phase (the CLI prints them)."""
    say = on_progress or (lambda _message: None)
    began = time.perf_counter()
    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / LOOP_CONFIG_NAME, config.to_dict())
    report = LoopReport(output=str(output))

    def save() -> None:
        report.wall_s = round(time.perf_counter() - began, 3)
        write_json(output / LOOP_REPORT_NAME, report.to_dict())

    real = {Path(s): set_num_samples(Path(s)) for s in config.shards}
    round_0 = RoundRecord(round=0, report_dir=str(config.round_dir(0) / "report"))
    report.rounds.append(round_0)
    round_0_config = config.round_train_config(0, list(real), None)
    checkpoint = _train_round(round_0_config, 0, round_0, Path(round_0.report_dir), say)
    report.final_checkpoint = str(checkpoint)
    save()
    generated: dict[Path, int] = {}
    for round_ in range(1, config.rounds + 1):
        record = RoundRecord(round=round_, report_dir=str(config.round_dir(round_) / "report"))
        report.rounds.append(record)
        inputs = [*real, *generated]
        round_report = _improve(config, round_, checkpoint, inputs, say)
        record.generated_set = str(config.round_dir(round_) / "shards")
        # The checkpoint the round generated with (as it resolved it), which a rerun does not change.
        record.improve_checkpoint = str(round_report.get("checkpoint", checkpoint))
        record.num_candidates = int(round_report["num_candidates"])
        record.num_accepted = int(round_report["num_accepted"])
        record.acceptance_rate = float(round_report["acceptance_rate"])
        record.reasons = {str(reason): int(count) for reason, count in round_report.get("reasons", {}).items()}
        save()
        if record.num_accepted == 0:
            report.stop_reason = STOP_NOTHING_ACCEPTED
            report.stop_detail = f"round {round_}: none of {record.num_candidates} candidates accepted"
            break
        if record.acceptance_rate < config.min_acceptance_rate:
            report.stop_reason = STOP_LOW_ACCEPTANCE
            report.stop_detail = (
                f"round {round_}: acceptance rate {record.acceptance_rate:.3f} is below min_acceptance_rate "
                f"{config.min_acceptance_rate:.3f} ({record.num_accepted} of {record.num_candidates} candidates)"
            )
            break
        generated[Path(record.generated_set)] = set_num_samples(Path(record.generated_set))
        sets = [*real, *generated]
        weights = mix_weights(real, generated, config.real_to_generated)
        train_config = config.round_train_config(round_, sets, weights)
        seed_run(train_config.output_dir, checkpoint)
        checkpoint = _train_round(train_config, _checkpoint_step(checkpoint), record, Path(record.report_dir), say)
        report.final_checkpoint = str(checkpoint)
        save()
    else:
        report.stop_reason = STOP_ROUNDS_DONE
        report.stop_detail = f"all {config.rounds} round(s) done"
    save()
    return report
