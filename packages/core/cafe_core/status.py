"""Per-input status rows: every input a job saw gets one, whether or not it produced a sample.

Stored as `{prefix}-{n:06d}.status.parquet` beside the shard holding the input's samples, so a
shard and the inputs it accounts for are committed together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("ok", "skipped", "failed")
REASON_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")

STATUS_SCHEMA = pa.schema(
    [
        ("input_key", pa.string()),
        ("source_uri", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("sample_keys", pa.list_(pa.string())),
        ("timings_s", pa.map_(pa.string(), pa.float64())),
    ]
)


@dataclass(frozen=True)
class InputStatus:
    """What became of one input.

    input_key: the input's stable id (a path relative to the input root, a manifest id, ...).
    status: `ok` (produced samples), `skipped` (a rule turned it away), `failed` (an error).
    reason: a dotted lowercase code, e.g. `decode.truncated` or `gate.mask_area`; required
        unless ok, so that reports can count inputs per reason.
    error: free text for humans, e.g. the exception message.
    timings_s: seconds spent per stage.
    """

    input_key: str
    status: str
    reason: str = ""
    error: str = ""
    source_uri: str = ""
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.input_key, str) or not self.input_key:
            raise ValueError("InputStatus.input_key: expected the input's non-empty id")
        if self.status not in STATUSES:
            raise ValueError(f"InputStatus.status: {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"InputStatus.reason: required when status is {self.status!r} (e.g. 'decode.truncated')")
        if self.reason and not REASON_PATTERN.match(self.reason):
            raise ValueError(
                f"InputStatus.reason: {self.reason!r} is not a dotted lowercase code like 'gate.mask_area'"
            )

    @classmethod
    def ok(cls, input_key: str, **kwargs) -> InputStatus:
        return cls(input_key=input_key, status="ok", **kwargs)


def write_status_table(path: Path, rows: Sequence[tuple[InputStatus, Sequence[str]]]) -> None:
    """Write (status, sample keys) rows as a parquet file at `path` (the caller renames it in)."""
    table = pa.table(
        {
            "input_key": [s.input_key for s, _ in rows],
            "source_uri": [s.source_uri for s, _ in rows],
            "status": [s.status for s, _ in rows],
            "reason": [s.reason for s, _ in rows],
            "error": [s.error for s, _ in rows],
            "sample_keys": [list(keys) for _, keys in rows],
            "timings_s": [list(s.timings_s.items()) for s, _ in rows],
        },
        schema=STATUS_SCHEMA,
    )
    pq.write_table(table, path)


def read_status_tables(paths: Iterable[Path], columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of the given status parquets, concatenated, with a `shard` column (file stem)."""
    tables = []
    for path in paths:
        table = pq.read_table(path, columns=list(columns) if columns else None)
        shard = Path(path).name.removesuffix(".status.parquet")
        tables.append(table.append_column("shard", pa.array([shard] * table.num_rows, pa.string())))
    if not tables:
        schema = STATUS_SCHEMA if columns is None else pa.schema([STATUS_SCHEMA.field(c) for c in columns])
        return schema.empty_table().append_column("shard", pa.array([], pa.string()))
    return pa.concat_tables(tables)
