"""The driver's side of a round: reference rows in, each partition filtered, deduplicated and written as a shard.

Beside each shard goes its candidate table, `candidates/{shard}.parquet`: one row per candidate
(scores, verdict, hash, and the embedding of accepted ones), written before the shard commits, so a
resumed round reloads the duplicate checks' state from it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cafe_core import SCHEMA_VERSION, EncodedSample, InputStatus, ShardWriter
from cafe_core.layout import atomic_write
from cafe_core.metadata import metadata_problems
from cafe_core.triple import MASK, METADATA, PROMPT, REFERENCE, TARGET, encode_metadata
from cafe_pipelines.dedupe import DedupeIndex
from cafe_pipelines.filtering import filter_candidates
from cafe_pipelines.improve_config import ImproveConfig
from cafe_pipelines.round_inputs import InputReference
from cafe_pipelines.round_pairs import Pair, candidate_key, source_row_key
from cafe_pipelines.round_pictures import Example
from cafe_pipelines.stages.score import embeddings_from_bytes

log = logging.getLogger(__name__)

CANDIDATES_DIR = "candidates"

CANDIDATE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("reference_set", pa.string()),
        ("reference_key", pa.string()),
        ("prompt_index", pa.int32()),
        ("candidate_index", pa.int32()),
        ("seed", pa.int64()),
        ("subject", pa.string()),
        ("prompt", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("accepted", pa.bool_()),
        ("scores", pa.string()),  # JSON name -> number; "{}" when generation or scoring failed
        ("sha256", pa.string()),  # of the target's encoded bytes; "" without an image
        ("embedding", pa.list_(pa.float32())),  # accepted candidates only: the near-duplicate state
    ]
)


# -- per-shard candidate tables -------------------------------------------------------------------


def candidates_path(root: Path, shard_name: str) -> Path:
    return root / CANDIDATES_DIR / f"{shard_name}.parquet"


def write_candidates(path: Path, records: list[dict[str, Any]]) -> None:
    columns = {name: [r[name] for r in records] for name in CANDIDATE_SCHEMA.names}
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=CANDIDATE_SCHEMA), buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue().to_pybytes(), path.with_name(f".{path.name}.{os.getpid()}.tmp"))


def read_candidates(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing, though its shard is done; it holds the round's duplicate-check state. "
            "Rerun the round with --mode overwrite"
        )
    return pq.read_table(path).to_pylist()


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """A candidate-table row as the report lists it (scores parsed, no hash or embedding)."""
    keep = {k: v for k, v in record.items() if k not in ("sha256", "embedding", "scores")}
    return {**keep, "scores": json.loads(record["scores"])}


# -- the driver's side of the stream -------------------------------------------------------------


@dataclass
class _Candidate:
    key: str
    pair: Pair
    index: int
    status: str = "ok"
    reason: str = ""
    error: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    box: list[int] | None = None
    target: bytes = b""
    mask: bytes = b""
    embedding: np.ndarray | None = None
    sha256: str = ""
    gates: tuple[str, ...] = ()

    def reject(self, status: str, reason: str, error: str) -> None:
        self.status, self.reason, self.error = status, reason, error


def _image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as opened:  # reads the header only
        return opened.size


class RoundWriter:
    """Collects reference rows per partition; writes each partition as one shard, in order, once complete."""

    def __init__(
        self,
        *,
        config: ImproveConfig,
        writer: ShardWriter,
        partitions: list[tuple[int, list[InputReference]]],
        pairs: dict[str, list[Pair]],
        dedupe: DedupeIndex,
        prior_accepted: list[dict[str, Any]],
        sources: list[list[InputReference]],
        metadata_base: dict[str, Any],
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.numbers = [number for number, _ in partitions]
        self.expected = [len(refs) for _, refs in partitions]  # reference rows per partition
        self.pairs = {r.key: pairs[r.key] for _, refs in partitions for r in refs}
        self.dedupe = dedupe
        self.prior_accepted = prior_accepted
        # Source row key -> the references whose source targets it carries (round_pairs.source_chunks).
        self.sources = {source_row_key(chunk): chunk for chunk in sources}
        self.sources_left = len(sources)
        self.metadata_base = metadata_base
        self.on_progress = on_progress
        self.total = sum(len(reference_pairs) for reference_pairs in self.pairs.values()) * config.candidates_per_pair
        self.pending: dict[int, list[dict[str, Any]]] = {}
        self.next_partition = 0
        self.records: list[dict[str, Any]] = []  # this run's candidate-table rows
        self.examples: dict[bool, list[Example]] = {True: [], False: []}
        self.seconds: Counter[str] = Counter()
        self.shards_written = 0
        if not sources:
            self._sources_done()

    def _sources_done(self) -> None:
        # The state carried over from done shards goes in after the sources, in shard order: the
        # order an uninterrupted run added them in.
        for record in self.prior_accepted:
            embedding = None if record["embedding"] is None else np.asarray(record["embedding"], dtype=np.float32)
            self.dedupe.add(record["key"], record["sha256"], embedding)

    def add(self, row: dict[str, Any]) -> None:
        self.seconds["generate"] += float(row.get("t_generate", 0.0))
        self.seconds["score"] += float(row.get("t_score", 0.0))
        if row["kind"] == "source":
            self._add_source(row)
            return
        if self.sources_left:
            raise RuntimeError("a reference row arrived before every source row: Ray Data did not keep the row order")
        self.pending.setdefault(int(row["partition"]), []).append(row)
        while (
            self.next_partition < len(self.expected)
            and len(self.pending.get(self.next_partition, ())) == self.expected[self.next_partition]
        ):
            self._write_partition(self.next_partition, self.pending.pop(self.next_partition))
            self.next_partition += 1

    def _add_source(self, row: dict[str, Any]) -> None:
        chunk = self.sources[str(row["input_key"])]
        if str(row["status"]) == "ok":
            errors = json.loads(str(row["c_errors"]))
        else:  # the whole row failed: no source of it is known
            errors = [str(row["error"]) or str(row["reason"])] * len(chunk)
        embeddings = iter(embeddings_from_bytes(bytes(row["c_embeddings"]), errors.count("")))
        for reference, error in zip(chunk, errors, strict=True):
            if error:  # an unreadable source: candidates are still checked against every other one
                log.warning("source target of %s not embedded: %s", reference.key, error)
                continue
            self.dedupe.add_known(f"the source target of {reference.set_path}:{reference.key}", next(embeddings))
        self.sources_left -= 1
        if self.sources_left == 0:
            self._sources_done()

    # -- one partition: expand, filter, dedupe, write --

    def _expand(self, rows: list[dict[str, Any]]) -> list[_Candidate]:
        """The candidates of a partition's reference rows: by reference key, then prompt, then index."""
        step = int(self.metadata_base["generation"]["checkpoint"]["step"])
        round_number = int(self.metadata_base["round"])
        per_pair = self.config.candidates_per_pair
        candidates = []
        for row in sorted(rows, key=lambda r: str(r["reference_key"])):
            pairs = self.pairs[str(row["input_key"])]
            count = len(pairs) * per_pair
            status, reason, error = str(row["status"]), str(row["reason"]), str(row["error"])
            ok = status == "ok"
            scores = json.loads(str(row["c_scores"])) if ok else []
            boxes = json.loads(str(row["c_boxes"])) if ok else []
            targets = list(row["m_targets"]) if ok else []
            masks = list(row["m_masks"]) if ok else []
            embeddings = embeddings_from_bytes(bytes(row["c_embeddings"]), count) if ok else None
            if ok and not (len(scores) == len(boxes) == len(targets) == len(masks) == count):
                status, reason, ok = "failed", "error.score", False
                error = f"{len(targets)} images and {len(scores)} scores for {count} candidates"
            for position in range(count):
                pair, index = pairs[position // per_pair], position % per_pair
                key = candidate_key(pair.reference.key, pair.prompt_index, index, step, round_number)
                candidate = _Candidate(key, pair, index)
                if not ok:
                    candidate.reject(status, reason, error)
                else:
                    candidate.scores = scores[position]
                    candidate.box = boxes[position]
                    candidate.target = bytes(targets[position])
                    candidate.mask = bytes(masks[position])
                    candidate.embedding = embeddings[position]
                candidates.append(candidate)
        return candidates

    def _filter(self, candidates: list[_Candidate]) -> None:
        scored = [c for c in candidates if c.status == "ok"]
        verdicts = filter_candidates(
            [c.scores for c in scored], [c.pair.reference.subject for c in scored], self.config.filter
        )
        for candidate, verdict in zip(scored, verdicts, strict=True):
            if not verdict.accepted:
                candidate.reject("skipped", verdict.reason, verdict.detail)
                continue
            if not candidate.mask or candidate.box is None:
                candidate.reject("skipped", "filter.not_found", "the scorers found the subject but gave no mask")
                continue
            width, height = _image_size(candidate.target)
            x0, y0, x1, y1 = candidate.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                candidate.reject("skipped", "filter.not_found", f"box {candidate.box} is empty or outside the image")
                continue
            candidate.gates = verdict.passed

    def _dedupe(self, candidates: list[_Candidate]) -> None:
        config = self.config.dedupe
        checks = (("sha256",) if config.sha256 else ()) + (("near",) if config.max_cosine is not None else ())
        for candidate in candidates:
            if candidate.target:
                candidate.sha256 = hashlib.sha256(candidate.target).hexdigest()
            if candidate.status != "ok":
                continue
            found = self.dedupe.check(candidate.sha256, candidate.embedding)
            if found is not None:
                candidate.reject("skipped", *found)
                continue
            self.dedupe.add(candidate.key, candidate.sha256, candidate.embedding)
            candidate.gates = (*candidate.gates, *checks)

    def _metadata(self, candidate: _Candidate) -> dict[str, Any]:
        pair, reference = candidate.pair, candidate.pair.reference
        base = self.metadata_base
        return {
            "schema_version": SCHEMA_VERSION,
            "subject": reference.subject,
            "caption": pair.prompt,
            "box_xyxy": list(candidate.box or ()),
            "scores": {},
            "gates": list(candidate.gates),
            "source": {
                "uri": f"{reference.set_path}#{reference.key}",
                "sha256": reference.source_sha256,
                "input_key": reference.key,
                "set": reference.set_path,
                "key": reference.key,
                "round": reference.round,
            },
            "models": base["models"],
            "round": base["round"],
            "generation": {
                **base["generation"],
                "seed": pair.seed,
                "index": candidate.index,
                "prompt_index": pair.prompt_index,
            },
            "quality": dict(candidate.scores),
        }

    def _write_partition(self, partition: int, rows: list[dict[str, Any]]) -> None:
        started = time.perf_counter()
        candidates = self._expand(rows)
        self._filter(candidates)
        filtered = time.perf_counter()
        self._dedupe(candidates)
        deduped = time.perf_counter()
        timings = {str(r["input_key"]): (float(r.get("t_generate", 0.0)), float(r.get("t_score", 0.0))) for r in rows}
        references = {str(r["input_key"]): bytes(r["m_reference"]) for r in rows}
        records = []
        for candidate in candidates:
            pair, reference = candidate.pair, candidate.pair.reference
            t_generate, t_score = timings[reference.key]  # the row's: its reference's candidates share them
            per = len(self.pairs[reference.key]) * self.config.candidates_per_pair
            status = InputStatus(
                candidate.key,
                candidate.status,
                reason=candidate.reason,
                error=candidate.error,
                source_uri=f"{reference.set_path}#{reference.key}",
                timings_s={"generate": t_generate / per, "score": t_score / per},
            )
            samples = []
            if candidate.status == "ok":
                metadata = self._metadata(candidate)
                problems = metadata_problems(metadata, _image_size(candidate.target))
                if problems:
                    raise ValueError(f"candidate {candidate.key}: metadata breaks the contract: {'; '.join(problems)}")
                members = {
                    TARGET: candidate.target,
                    REFERENCE: references[reference.key],
                    MASK: candidate.mask,
                    PROMPT: pair.prompt.encode("utf-8"),
                    METADATA: encode_metadata(metadata),
                }
                samples = [EncodedSample.from_members(candidate.key, members)]
            self.writer.add_encoded(status, samples)
            accepted = candidate.status == "ok"
            kept_embedding = candidate.embedding if accepted else None
            records.append(
                {
                    "key": candidate.key,
                    "reference_set": reference.set_path,
                    "reference_key": reference.key,
                    "prompt_index": pair.prompt_index,
                    "candidate_index": candidate.index,
                    "seed": pair.seed,
                    "subject": reference.subject,
                    "prompt": pair.prompt,
                    "status": candidate.status,
                    "reason": candidate.reason,
                    "accepted": accepted,
                    "scores": json.dumps(candidate.scores, sort_keys=True),
                    "sha256": candidate.sha256,
                    "embedding": None if kept_embedding is None else [float(v) for v in kept_embedding],
                }
            )
            self._keep_example(candidate, references[reference.key])
        # The duplicate-check state first, then the shard: a done shard always has its table.
        name = self.writer.layout.shard_name(self.numbers[partition])
        write_candidates(candidates_path(self.writer.layout.root, name), records)
        self.writer.flush()
        committed = self.writer.written[-1]["shard"]
        if committed != name:
            raise RuntimeError(f"partition {partition} was planned as {name} but the writer committed {committed}")
        self.records += records
        self.shards_written += 1
        self.seconds["filter"] += filtered - started
        self.seconds["dedupe"] += deduped - filtered
        self.seconds["write"] += time.perf_counter() - deduped
        if self.on_progress:
            self.on_progress(len(self.records), self.total)

    def _keep_example(self, candidate: _Candidate, reference_png: bytes) -> None:
        accepted = candidate.status == "ok"
        kept = self.examples[accepted]
        if not candidate.target or len(kept) >= self.config.num_examples:
            return
        kept.append(
            Example(
                key=candidate.key,
                reference_png=reference_png,
                target_jpg=candidate.target,
                prompt=candidate.pair.prompt,
                accepted=accepted,
                reason=candidate.reason,
                scores=candidate.scores,
            )
        )
