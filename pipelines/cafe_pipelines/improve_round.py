"""One self-improvement round: a trained checkpoint's own filtered outputs -> a new shard set (round k+1), on Ray Data.

    read inputs (driver) -> references and pairs -> generate -> score -> filter -> dedupe -> write (driver)

The driver reads the input sets (closed sets of round k; never written) and picks references, a
seeded hash of their keys deciding which; each reference gets `prompts_per_reference` prompts of
its prompt bank (cafe_pipelines.prompt_bank). A reference and its (reference, prompt) pairs are one
row: the generate stage draws each pair's `candidates_per_pair` images in one batch with the pair's
seed, the score stage scores all of the reference's candidates together (cafe_vision.scorers), and
the driver (cafe_pipelines.round_writer, a partition at a time) filters (cafe_pipelines.filtering),
drops duplicates (cafe_pipelines.dedupe) and writes every candidate's status row, and each accepted
one as a triple, through cafe_core. Rows of a second kind carry the references' source targets
(16 to a row) to the score stage, whose embeddings the near-duplicate check compares candidates with.

References are sorted by key and cut into partitions of `references_per_shard`; partition p
becomes the p-th shard number not yet done, and Ray Data keeps rows in order, so a round's shards
are deterministic. Every number a decision reads is too: a pair's images are one batch with its
seed, a reference's scores one scorer call, percentile floors are per shard, and the state the
duplicate checks carry from shard to shard (accepted hashes and embeddings) is saved beside each
shard, in `candidates/{shard}.parquet`, before the shard commits. `incremental` (the default)
leaves out references whose candidates are in done shards and reloads that state, so a round
killed at any point and run again ends with the same shards, byte for byte.

OUTPUT (a shard set) also holds `round-report.json` (the RoundReport), `candidates/` (one row per
candidate: scores, verdict, hash, and the embedding of accepted ones) and `report/`
(`histogram-{score}.png`, accepted vs rejected, and `examples.png`, reference | candidate).

Run it with `cafe improve round --checkpoint RUN --shards DIR --output DIR --preset tiny|base`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cafe_core import ShardSet, ShardWriter, WriteMode
from cafe_core.layout import atomic_write
from cafe_core.shardset import parse_mode
from cafe_pipelines.dedupe import DedupeIndex
from cafe_pipelines.improve_config import ImproveConfig, config_dict
from cafe_pipelines.prompt_bank import pick_prompts
from cafe_pipelines.ray_jobs import (
    configure_streaming,
    ensure_ray,
    iter_rows,
    map_stage,
    plan_partitions,
    stage_threads,
)
from cafe_pipelines.round_inputs import InputReference, RoundInputs, read_round_inputs
from cafe_pipelines.round_pairs import Pair, candidate_key, pair_seed, source_chunks, source_row_key
from cafe_pipelines.round_pictures import Example, examples_grid, histogram_image
from cafe_pipelines.round_writer import CANDIDATES_DIR, RoundWriter, candidates_path, public_record, read_candidates
from cafe_pipelines.stages.generate import GenerateStage
from cafe_pipelines.stages.score import ScoreStage
from cafe_vision.scorer_presets import get_scorer_preset

if TYPE_CHECKING:  # cafe_model.trained is imported where a round starts, not with this module
    from cafe_model.trained import TrainedCheckpoint

log = logging.getLogger(__name__)

REPORT_NAME = "round-report.json"
REPORT_DIR = "report"
STAGES = ("read", "generate", "score", "filter", "dedupe", "write", "report")

# -- the report ------------------------------------------------------------------------------------


@dataclass
class RoundReport:
    """What the round holds (every candidate of its done shards, this run's and earlier runs'), and
    what this run did (`candidates_this_run`, `shards_written`, `stage_s`, `wall_s`). Saved as
    OUTPUT/round-report.json.

    reasons: reason code -> candidates (skipped: filter.*, dedupe.*; failed: error.<stage>).
    candidates: per candidate: key, reference_set, reference_key, prompt_index, candidate_index,
        seed, subject, prompt, status, reason, accepted, scores.
    stage_s: busy seconds of this run per stage: read (the inputs), generate and score (actor time,
        summed over actors), filter, dedupe, write (the driver), report (histograms and examples).
    """

    round: int
    output: str
    checkpoint: str
    checkpoint_step: int
    preset: str
    input_sets: list[str]
    num_references: int = 0
    num_pairs: int = 0
    num_candidates: int = 0
    num_accepted: int = 0
    num_failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    references_already_done: int = 0
    candidates_this_run: int = 0
    shards_written: int = 0
    stage_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    candidates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_candidates if self.num_candidates else 0.0

    def score_lists(self) -> dict[str, dict[str, list[float]]]:
        """score name -> {"accepted": [...], "rejected": [...]} over the candidates that were scored."""
        lists: dict[str, dict[str, list[float]]] = {}
        for candidate in self.candidates:
            side = "accepted" if candidate["accepted"] else "rejected"
            for name, value in candidate["scores"].items():
                lists.setdefault(name, {"accepted": [], "rejected": []})[side].append(float(value))
        return lists

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "acceptance_rate": round(self.acceptance_rate, 6)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RoundReport:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def read_round_report(output: str | Path) -> RoundReport:
    """The RoundReport a round saved in its output set."""
    return RoundReport.from_dict(json.loads((Path(output) / REPORT_NAME).read_text()))


# -- the job ---------------------------------------------------------------------------------------


def _buffer_bytes(config: ImproveConfig, size_px: int) -> int:
    """`buffer_mb`, or room for four batches per actor of reference rows (their candidates as raw RGBA), >= 64 MB."""
    if config.buffer_mb is not None:
        return config.buffer_mb * 1_000_000
    r = config.resources
    rows = sum(s.batch_size * s.concurrency for s in (r.generate, r.score))
    per_row = config.prompts_per_reference * config.candidates_per_pair
    return max(64_000_000, 4 * rows * per_row * 4 * size_px**2)


def round_checkpoint(config: ImproveConfig) -> tuple[TrainedCheckpoint, int | None]:
    """The checkpoint the round draws with (`config.checkpoint` resolved once) and its candidates' side.

    The side is `config.size_px`, else the checkpoint's training resolution (None if it recorded none).
    """
    from cafe_model.trained import find_checkpoint

    checkpoint = find_checkpoint(config.checkpoint, weights=config.weights)
    resolution = checkpoint.config.get("resolution_px")
    return checkpoint, config.size_px if config.size_px is not None else (int(resolution) if resolution else None)


def stage_kwargs(
    config: ImproveConfig, checkpoint_path: Path, size_px: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constructor arguments of the round's `GenerateStage` and `ScoreStage` (one actor of each)."""
    r = config.resources
    generate = {
        "checkpoint": str(checkpoint_path),
        "num_candidates": config.candidates_per_pair,
        "num_steps": config.num_steps,
        "text_guidance": config.text_guidance,
        "reference_guidance": config.reference_guidance,
        "reference_scale": config.reference_scale,
        "negative_prompt": config.negative_prompt,
        "size_px": size_px,
        "weights": config.weights,
        "device": config.device,
        "dtype": config.dtype,
        "num_threads": stage_threads(r.generate),
        "cache_dir": config.model_cache_dir,
    }
    score = {
        "preset": config.preset,
        "device": config.device,
        "dtype": config.dtype,
        "num_threads": stage_threads(r.score),
        "cache_dir": config.model_cache_dir,
        "batch_size": config.score_batch_size,
    }
    return generate, score


def build_round_dataset(
    config: ImproveConfig, checkpoint_path: Path, size_px: int | None, rows: list[dict[str, Any]]
) -> Any:
    """The Ray Data pipeline over source and reference rows (not executed until iterated)."""
    import ray

    generate_kwargs, score_kwargs = stage_kwargs(config, checkpoint_path, size_px)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
    ds = map_stage(ds, GenerateStage, config.resources.generate, generate_kwargs)
    return map_stage(ds, ScoreStage, config.resources.score, score_kwargs)


def _rows(
    references: list[InputReference],
    partitions: list[tuple[int, list[InputReference]]],
    pairs: dict[str, list[Pair]],
    with_sources: bool,
) -> list[dict[str, Any]]:
    """Source rows (the source targets of every reference, `source_chunks` of them per row, when the near
    check is on) first, then reference rows by partition.

    A reference row carries all of its pairs (`pairs`: JSON [[prompt, seed], ...] in prompt order; a
    string, because Arrow takes a list column of ints for a tensor in one block and objects in
    another, and fails to join them): the score stage scores a reference's candidates in one call, a
    batch several times a pair's.
    """
    blank = {"status": "ok", "reason": "", "error": "", "subject": "", "pairs": "[]", "sources": "[]"}
    none = {"ref_path": "", "ref_offset": 0, "ref_size": 0}
    rows = []
    for chunk in source_chunks(references) if with_sources else []:
        locations = [[ref.source_target.path, ref.source_target.offset, ref.source_target.size] for ref in chunk]
        rows.append(
            {
                **blank,
                **none,
                "input_key": source_row_key(chunk),
                "kind": "source",
                "partition": -1,
                "reference_set": "",
                "reference_key": "",
                "sources": json.dumps(locations),
            }
        )
    for partition, (_, refs) in enumerate(partitions):
        for ref in refs:
            rows.append(
                {
                    **blank,
                    **none,
                    "input_key": ref.key,
                    "kind": "reference",
                    "partition": partition,
                    "reference_set": ref.set_path,
                    "reference_key": ref.key,
                    "pairs": json.dumps([[pair.prompt, pair.seed] for pair in pairs[ref.key]]),
                    "subject": ref.subject,
                    "ref_path": ref.reference.path,
                    "ref_offset": ref.reference.offset,
                    "ref_size": ref.reference.size,
                }
            )
    return rows


def _clear_round_files(root: Path) -> None:
    """What a round writes beside its shards; overwrite mode starts without them."""
    shutil.rmtree(root / CANDIDATES_DIR, ignore_errors=True)
    shutil.rmtree(root / REPORT_DIR, ignore_errors=True)
    (root / REPORT_NAME).unlink(missing_ok=True)


def _drop_unfinished_tables(shard_set: ShardSet) -> None:
    """Candidate tables of shards that never committed, and temporaries: what a killed round leaves."""
    folder = shard_set.root / CANDIDATES_DIR
    if not folder.is_dir():
        return
    done = {f"{shard_set.layout.shard_name(n)}.parquet" for n in shard_set.layout.done_numbers()}
    for path in folder.iterdir():
        if path.name not in done:
            path.unlink(missing_ok=True)


def _write_pictures(root: Path, report: RoundReport, examples: dict[bool, list[Example]]) -> None:
    folder = root / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, sides in report.score_lists().items():
        histogram_image(name, sides["accepted"], sides["rejected"]).save(folder / f"histogram-{name}.png")
    shown = examples[True] + examples[False]
    if shown:  # a rerun with nothing left to do keeps the examples of the run that made them
        examples_grid(shown).save(folder / "examples.png")


def _summarize(report: RoundReport, records: list[dict[str, Any]]) -> None:
    report.candidates = [public_record(r) for r in records]
    report.num_candidates = len(records)
    report.num_accepted = sum(1 for r in records if r["accepted"])
    report.num_failed = sum(1 for r in records if r["status"] == "failed")
    report.reasons = dict(sorted(Counter(r["reason"] for r in records if r["reason"]).items()))


def improve_round(config: ImproveConfig, on_progress: Callable[[int, int], None] | None = None) -> RoundReport:
    """Run one round; `on_progress(done, total)` is called as candidates are written. Returns the report.

    Raises FileNotFoundError (no checkpoint, a missing input set or candidate table), ValueError (an input
    set that is not closed, no references to pick), RuntimeError (rows out of order: a broken Ray Data).
    """
    started = time.monotonic()
    mode = parse_mode(config.mode)
    checkpoint, size_px = round_checkpoint(config)
    checkpoint_path = checkpoint.path.resolve()

    read_started = time.perf_counter()
    inputs: RoundInputs = read_round_inputs(config.shards, num_references=config.num_references, seed=config.seed)
    read_s = time.perf_counter() - read_started
    if not inputs.references:
        raise ValueError(f"--shards {', '.join(config.shards)}: no unflagged samples to take references from")
    round_number = inputs.round + 1
    references = inputs.references
    pairs = {
        ref.key: [
            Pair(ref, index, prompt, pair_seed(config.seed, round_number, ref.key, index))
            for index, prompt in pick_prompts(
                ref.subject, ref.caption, config.prompts_per_reference, seed=config.seed, reference_key=ref.key
            )
        ]
        for ref in references
    }

    root = Path(config.output)
    shard_set = ShardSet(root, prefix=config.prefix)
    # Before anything here is removed: another writer is refused (naming it) until release() below.
    shard_set.lock("improve-round")
    if mode is WriteMode.OVERWRITE:
        _clear_round_files(root)
    first = shard_set.prepare(mode)
    _drop_unfinished_tables(shard_set)
    done_keys = shard_set.done_input_keys() if mode is WriteMode.INCREMENTAL else set()
    step = checkpoint.step

    def is_done(ref: InputReference) -> bool:
        keys = [
            candidate_key(ref.key, p.prompt_index, c, step, round_number)
            for p in pairs[ref.key]
            for c in range(config.candidates_per_pair)
        ]
        return all(k in done_keys for k in keys)

    todo = [ref for ref in references if not is_done(ref)]
    partitions = plan_partitions(shard_set, todo, config.references_per_shard, first, key=lambda ref: ref.key)
    layout = shard_set.layout
    prior: list[dict[str, Any]] = []
    for number in layout.done_numbers():
        prior += read_candidates(candidates_path(root, layout.shard_name(number)))

    scorer_preset = get_scorer_preset(config.preset)
    models = {
        **scorer_preset.model_records(),
        "generator": {"name": str(checkpoint_path), "revision": f"step-{step:06d}"},
    }
    sampler = {
        "scheduler": "DDIMScheduler",  # load_trained_pipeline's; the stage reports it, checked below
        "steps": config.num_steps,
        "text_guidance": config.text_guidance,
        "reference_guidance": config.reference_guidance,
        "reference_scale": config.reference_scale,
        "negative_prompt": config.negative_prompt,
        "height_px": size_px,
        "width_px": size_px,
        "eta": 0.0,
    }
    metadata_base = {
        "round": round_number,
        "models": models,
        "generation": {
            "checkpoint": {
                "path": str(checkpoint_path),
                "step": step,
                "preset": checkpoint.preset,
                "weights": checkpoint.weights_path.name,
            },
            "sampler": sampler,
        },
    }
    dedupe = DedupeIndex(config.dedupe, known_sha256=inputs.target_sha256)
    with_sources = config.dedupe.max_cosine is not None
    big = 1 << 62  # partitions, not size limits, decide where shards end
    writer = ShardWriter(
        root,
        prefix=config.prefix,
        first_shard=first,
        skip_done=mode is WriteMode.INCREMENTAL,
        max_samples=big,
        max_bytes=big,
        max_inputs=big,
    )
    sink = RoundWriter(
        config=config,
        writer=writer,
        partitions=partitions,
        pairs=pairs,
        dedupe=dedupe,
        prior_accepted=[r for r in prior if r["accepted"]],
        sources=source_chunks(references) if (with_sources and partitions) else [],
        metadata_base=metadata_base,
        on_progress=on_progress,
    )
    if partitions:
        ensure_ray()
        configure_streaming(_buffer_bytes(config, size_px or 512))
        rows = _rows(references, partitions, pairs, with_sources)
        with writer:
            for batch in build_round_dataset(config, checkpoint_path, size_px, rows).iter_batches(
                batch_size=None, batch_format="numpy"
            ):
                used = {str(name) for name in batch["scheduler"] if name} - {sampler["scheduler"]}
                if used:  # the json would misstate the sampler
                    raise RuntimeError(f"the generate stage sampled with {used}, not {sampler['scheduler']}")
                for row in iter_rows(batch):
                    sink.add(row)

    lineage = {
        "job": "improve-round",
        "round": round_number,
        "input_sets": inputs.sets,
        "checkpoints": [metadata_base["generation"]["checkpoint"]],
        "scorers": {"preset": config.preset, "models": scorer_preset.model_records()},
        "config": config_dict(config),
    }
    shard_set.close(lineage=lineage)

    report = RoundReport(
        round=round_number,
        output=str(root),
        checkpoint=str(checkpoint_path),
        checkpoint_step=step,
        preset=config.preset,
        input_sets=[s["path"] for s in inputs.sets],
        num_references=len(references),
        num_pairs=sum(len(p) for p in pairs.values()),
        references_already_done=len(references) - len(todo),
        candidates_this_run=len(sink.records),
        shards_written=sink.shards_written,
    )
    _summarize(report, prior + sink.records)
    report_started = time.perf_counter()
    _write_pictures(root, report, sink.examples)
    seconds = {**sink.seconds, "read": read_s, "report": time.perf_counter() - report_started}
    report.stage_s = {name: round(seconds.get(name, 0.0), 6) for name in STAGES}
    report.wall_s = round(time.monotonic() - started, 3)
    data = json.dumps(report.to_dict(), indent=1).encode()
    atomic_write(root / REPORT_NAME, data, root / f".{REPORT_NAME}.{os.getpid()}.tmp")
    shard_set.release()
    return report
