"""The build-triples job: raw images -> (reference, prompt, target) shards, on Ray Data.

    decode -> caption -> ground -> segment -> compose (gates, cut-out, encode) -> write

Stages are actors (models load once per actor) streaming batches; the driver writes shards
through cafe_core. Inputs are sorted by input key and cut into partitions of
`inputs_per_shard`; partition p becomes the p-th shard number not yet done, and Ray Data
keeps rows in input order, so a run's shards are deterministic. `incremental` drops inputs
already recorded in done shards before partitioning: after a crash the rerun redoes exactly
the unfinished partitions, and a scheduled rerun processes only new inputs.

Run it with `cafe data build --input SRC --output DIR --preset tiny|base|large`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cafe_core import EncodedSample, InputStatus, ShardSet, ShardWriter, WriteMode
from cafe_core.shardset import parse_mode
from cafe_pipelines.build_config import BuildConfig, config_dict
from cafe_pipelines.ray_jobs import (
    configure_streaming,
    ensure_ray,
    iter_rows,
    map_stage,
    plan_partitions,
    stage_threads,
)
from cafe_pipelines.sources import IMAGE_SUFFIXES, InputRef, list_inputs
from cafe_pipelines.stages.caption import CaptionStage
from cafe_pipelines.stages.compose import MEMBER_COLUMNS, ComposeStage
from cafe_pipelines.stages.decode import DecodeStage
from cafe_pipelines.stages.ground import GroundStage
from cafe_pipelines.stages.segment import SegmentStage
from cafe_vision.presets import get_preset

log = logging.getLogger(__name__)

STAGES = ("decode", "caption", "ground", "segment", "compose")
REPORT_NAME = "build-report.json"


@dataclass
class RunReport:
    """What one run did; printed at the end and saved as build-report.json beside the shards."""

    inputs_listed: int = 0
    inputs_already_done: int = 0
    inputs_processed: int = 0
    ok: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # per reason
    failed: dict[str, int] = field(default_factory=dict)  # per error class
    samples_written: int = 0
    shards_written: int = 0
    stage_images_per_s: dict[str, float] = field(default_factory=dict)  # per actor, busy time only
    wall_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.inputs_processed / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "images_per_s": round(self.images_per_s, 3)}


def buffer_bytes(config: BuildConfig) -> int:
    """The object-store budget for rows between stages: `buffer_mb`, or room for four batches per
    actor of rows at the largest decoded size (RGB pixels plus a mask), at least 64 MB."""
    if config.buffer_mb is not None:
        return config.buffer_mb * 1_000_000
    r = config.resources
    rows = sum(s.batch_size * s.concurrency for s in (r.decode, r.caption, r.ground, r.segment, r.compose))
    return max(64_000_000, 4 * rows * 4 * config.max_side_px**2)


def build_dataset(config: BuildConfig, rows: list[dict[str, Any]]) -> Any:
    """The Ray Data pipeline over input rows (not executed until iterated)."""
    import ray

    preset = get_preset(config.preset)
    r = config.resources
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 64)))
    ds = map_stage(
        ds,
        DecodeStage,
        r.decode,
        {"gates": config.gates, "max_pixels": config.max_pixels, "max_side_px": config.max_side_px},
    )
    ds = map_stage(
        ds,
        CaptionStage,
        r.caption,
        {
            "preset": config.preset,
            "device": config.device,
            "dtype": config.dtype,
            "num_threads": stage_threads(r.caption),
            "max_new_tokens": config.caption_max_new_tokens,
        },
    )
    ds = map_stage(
        ds,
        GroundStage,
        r.ground,
        {
            "preset": config.preset,
            "device": config.device,
            "dtype": config.dtype,
            "num_threads": stage_threads(r.ground),
            "box_threshold": config.box_threshold,
            "text_threshold": config.text_threshold,
            "nms_iou_threshold": config.nms_iou_threshold,
            "require_subject_phrase": config.require_subject_phrase,
            "max_phrases": config.max_phrases,
        },
    )
    ds = map_stage(
        ds,
        SegmentStage,
        r.segment,
        {
            "preset": config.preset,
            "device": config.device,
            "dtype": config.dtype,
            "num_threads": stage_threads(r.segment),
            "sam_checkpoint": config.sam_checkpoint,
            "min_hole_area_px": config.min_hole_area_px,
            "min_island_area_px": config.min_island_area_px,
        },
    )
    return map_stage(
        ds,
        ComposeStage,
        r.compose,
        {"gates": config.gates, "models": preset.model_records(), "margin": config.reference_margin},
    )


def _status_of(row: dict[str, Any]) -> InputStatus:
    status, reason, error = str(row["status"]), str(row["reason"]), str(row["error"])
    notes = [n for n in str(row.get("notes", "")).split(",") if n]
    if status == "ok" and notes:
        reason = notes[0]  # ok with a repair: the first decode note says which
    elif notes:
        error = f"{error} (decode notes: {', '.join(notes)})"
    timings = {s: float(row[f"t_{s}"]) for s in STAGES if f"t_{s}" in row}
    return InputStatus(
        str(row["input_key"]), status, reason=reason, error=error, source_uri=str(row["uri"]), timings_s=timings
    )


class _PartitionWriter:
    """Collects rows per partition and writes each partition as one shard, in input-key order."""

    def __init__(self, writer: ShardWriter, partitions: list[tuple[int, list[InputRef]]], report: RunReport) -> None:
        self.writer = writer
        self.expected = [len(refs) for _, refs in partitions]
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self.next_partition = 0
        self.report = report
        self.busy_s: Counter[str] = Counter()
        self.busy_rows: Counter[str] = Counter()

    def add(self, row: dict[str, Any]) -> None:
        self.pending.setdefault(int(row["partition"]), []).append(row)
        # Partitions are written in order, so the shard numbers follow the input order.
        while (
            self.next_partition < len(self.expected)
            and len(self.pending.get(self.next_partition, ())) == self.expected[self.next_partition]
        ):
            self._write(self.pending.pop(self.next_partition))
            self.next_partition += 1

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for row in sorted(rows, key=lambda r: str(r["input_key"])):
            status = _status_of(row)
            for stage in STAGES:
                seconds = float(row.get(f"t_{stage}", 0.0))
                if seconds > 0:
                    self.busy_s[stage] += seconds
                    self.busy_rows[stage] += 1
            samples = []
            if status.status == "ok":
                key = str(row["key"])
                holder = self.writer.key_shard(key)
                if holder is not None:
                    error = f"same image bytes as sample {key} in {holder}"
                    status = dataclasses.replace(status, status="skipped", reason="input.duplicate", error=error)
                else:
                    members = {suffix: bytes(row[name]) for suffix, name in MEMBER_COLUMNS.items()}
                    samples = [EncodedSample.from_members(key, members)]
            self.writer.add_encoded(status, samples)
            self._count(status, len(samples))
        self.writer.flush()
        self.report.shards_written += 1

    def _count(self, status: InputStatus, num_samples: int) -> None:
        report = self.report
        report.inputs_processed += 1
        report.samples_written += num_samples
        if status.status == "ok":
            report.ok += 1
        elif status.status == "skipped":
            report.skipped[status.reason] = report.skipped.get(status.reason, 0) + 1
        else:
            error_class = status.error.split(":", 1)[0] or status.reason
            report.failed[error_class] = report.failed.get(error_class, 0) + 1


def build_triples(config: BuildConfig, on_progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Run the job; `on_progress(done, total)` is called as inputs are written. Returns the report."""
    started = time.monotonic()
    mode = parse_mode(config.mode)
    report = RunReport()
    inputs = list(list_inputs(config.input, config.input_roots, config.allow_outside_root))
    if not inputs:
        # Refused, not an empty set: an empty listing is a wrong path or a wrong suffix far more often
        # than a wish, and a set of nothing would pass as built.
        raise ValueError(
            f"--input {config.input}: no inputs found (a folder's image files end in "
            f"{', '.join(sorted(IMAGE_SUFFIXES))}; a manifest needs rows; a tar needs image members); "
            "nothing was written"
        )
    report.inputs_listed = len(inputs)
    shard_set = ShardSet(config.output, prefix=config.prefix)
    # Locks the set for this job (another writer is refused, naming it) until release() below.
    first = shard_set.prepare(mode, job="build-triples")
    if mode is WriteMode.INCREMENTAL:
        done = shard_set.done_input_keys()
        inputs = [ref for ref in inputs if ref.input_key not in done]
        report.inputs_already_done = report.inputs_listed - len(inputs)
    partitions = plan_partitions(shard_set, inputs, config.inputs_per_shard, first)
    big = 1 << 62  # partitions, not size limits, decide where shards end
    writer = ShardWriter(
        shard_set.root,
        prefix=config.prefix,
        first_shard=first,
        skip_done=mode is WriteMode.INCREMENTAL,
        max_samples=big,
        max_bytes=big,
        max_inputs=big,
    )
    sink = _PartitionWriter(writer, partitions, report)
    if partitions:
        ensure_ray()
        # Streaming with flat memory: a bounded buffer backpressures the stages that run ahead.
        configure_streaming(buffer_bytes(config))
        rows = [{**dataclasses.asdict(ref), "partition": p} for p, (_, refs) in enumerate(partitions) for ref in refs]
        with writer:
            for batch in build_dataset(config, rows).iter_batches(batch_size=None, batch_format="numpy"):
                for row in iter_rows(batch):
                    sink.add(row)
                if on_progress:
                    on_progress(report.inputs_processed, len(rows))
    lineage = {"job": "build-triples", "input": config.input, "config": config_dict(config)}
    shard_set.close(lineage=lineage)
    report.stage_images_per_s = {s: round(sink.busy_rows[s] / sink.busy_s[s], 3) for s in STAGES if sink.busy_s[s] > 0}
    report.wall_s = round(time.monotonic() - started, 3)
    (shard_set.root / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=1))
    shard_set.release()
    return report
