"""Which samples a page shows: round, score ranges, subject text, the input's status reason, flags.

Evaluated on one shard's columns at a time (`ShardColumns`, from its stats.json), so a filter
never opens a tar; only the reason filter reads the shard's status parquet, and only for
shards whose stats.json counts that reason at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from cafe_inspector.errors import BadRequest
from cafe_inspector.shard_data import ShardColumns

QUALITY_PREFIX = "quality."
_SCORE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_SUBJECT_CHARS = 200


class FlagFilter(StrEnum):
    ANY = "any"
    ONLY = "only"  # flagged samples only
    EXCLUDE = "exclude"  # usable samples only


@dataclass(frozen=True)
class ScoreRange:
    """`name` is a `scores` entry (`box`) or a `quality` one (`quality.clip_t`); bounds inclusive."""

    name: str
    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, text: str) -> ScoreRange:
        """`NAME:LOW:HIGH`, either bound may be empty: `box:0.5:`, `quality.clip_t::0.3`."""
        parts = text.split(":")
        if len(parts) != 3 or not _SCORE_NAME.match(parts[0]):
            raise BadRequest(f"score: {text!r} is not NAME:LOW:HIGH (e.g. 'box:0.3:0.9', 'mask_iou:0.8:')")
        bounds: list[float | None] = []
        for part in parts[1:]:
            if part.strip() == "":
                bounds.append(None)
                continue
            try:
                value = float(part)
            except ValueError:
                raise BadRequest(f"score: bound {part!r} in {text!r} is not a number") from None
            if not math.isfinite(value):
                raise BadRequest(f"score: bound {part!r} in {text!r} must be finite")
            bounds.append(value)
        low, high = bounds
        if low is not None and high is not None and low > high:
            raise BadRequest(f"score: {text!r} has its low bound above its high bound")
        return cls(parts[0], low, high)

    def values(self, columns: ShardColumns) -> np.ndarray | None:
        if self.name.startswith(QUALITY_PREFIX):
            return columns.quality.get(self.name.removeprefix(QUALITY_PREFIX))
        return columns.scores.get(self.name)


@dataclass(frozen=True)
class SampleFilter:
    rounds: frozenset[int] = frozenset()
    scores: tuple[ScoreRange, ...] = ()
    subject: str = ""  # case-insensitive substring of the subject phrase
    reason: str = ""  # the reason code of the sample's input (`ok` rows carry repairs, e.g. decode.exif_transposed)
    flagged: FlagFilter = FlagFilter.ANY

    @classmethod
    def parse(
        cls,
        *,
        rounds: Sequence[int] = (),
        scores: Sequence[str] = (),
        subject: str = "",
        reason: str = "",
        flagged: str = "any",
    ) -> SampleFilter:
        if any(r < 0 for r in rounds):
            raise BadRequest(f"round: {min(rounds)} is negative; rounds are 0 (real data) or k >= 1")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise BadRequest(f"subject: {len(subject)} characters, at most {MAX_SUBJECT_CHARS}")
        try:
            flag_filter = FlagFilter(flagged)
        except ValueError:
            allowed = ", ".join(f.value for f in FlagFilter)
            raise BadRequest(f"flagged: {flagged!r} is not one of {allowed}") from None
        return cls(
            rounds=frozenset(rounds),
            scores=tuple(ScoreRange.parse(s) for s in scores),
            subject=subject.strip().lower(),
            reason=reason.strip(),
            flagged=flag_filter,
        )

    @property
    def active(self) -> bool:
        return bool(self.rounds or self.scores or self.subject or self.reason or self.flagged is not FlagFilter.ANY)

    def may_match(self, columns: ShardColumns) -> bool:
        """False when the shard's stats.json alone rules every sample out (no parquet read)."""
        if self.reason and not columns.sample_reasons.get(self.reason):
            return False
        return not (self.rounds and self.rounds.isdisjoint(columns.round_set))

    def mask(
        self,
        columns: ShardColumns,
        flagged: Collection[str],
        reasons: Mapping[str, str] | None = None,
    ) -> np.ndarray:
        """A boolean per sample of the shard. `reasons` (key -> input reason) is needed when
        filtering by reason."""
        keep = np.ones(len(columns.keys), dtype=bool)
        if self.rounds:
            keep &= np.isin(columns.rounds, list(self.rounds))
        for score in self.scores:
            values = score.values(columns)
            if values is None:  # a score this shard never recorded: no sample can be in range
                return np.zeros(len(columns.keys), dtype=bool)
            # NaN (missing) compares False, so a sample without the score is out.
            if score.low is not None:
                keep &= values >= score.low
            if score.high is not None:
                keep &= values <= score.high
            if score.low is None and score.high is None:
                keep &= ~np.isnan(values)
        if self.subject:
            keep &= np.fromiter((self.subject in s for s in columns.subjects_lower), bool, len(columns.keys))
        if self.reason:
            if reasons is None:
                raise ValueError("SampleFilter.mask: a reason filter needs the shard's key -> reason map")
            keep &= np.fromiter((reasons.get(k) == self.reason for k in columns.keys), bool, len(columns.keys))
        if self.flagged is not FlagFilter.ANY:
            is_flagged = np.fromiter((k in flagged for k in columns.keys), bool, len(columns.keys))
            keep &= is_flagged if self.flagged is FlagFilter.ONLY else ~is_flagged
        return keep
