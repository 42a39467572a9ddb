"""Counts and score distributions of a shard set, from its index and per-shard stats.json only.

Never opens a tar or decodes an image: each shard's stats.json carries its samples' keys,
rounds, subjects and scores, written by the ShardWriter as the shard was committed.

Samples flagged as bad (`flags.parquet` beside the set, see cafe_core.flags) stay in
`num_samples` (they are still on disk) but are left out of the rounds, subjects and score
distributions, which describe what a training run would use (`num_usable`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from cafe_core.flags import flagged_keys
from cafe_core.index import read_index
from cafe_core.layout import SetLayout, detect_layout
from cafe_core.metadata import SCHEMA_VERSION

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HISTOGRAM_BINS = 10
TOP_SUBJECTS = 10


def distribution(values: list[float]) -> dict[str, Any]:
    """count, mean, min, quantiles, max and a 10-bin histogram of the non-missing values."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return {"count": 0}
    counts, edges = np.histogram(array, bins=HISTOGRAM_BINS)
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "min": float(array.min()),
        **{f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(array, QUANTILES), strict=True)},
        "max": float(array.max()),
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _kept(values: list[Any], usable: list[bool] | None) -> list[Any]:
    """The values of the usable samples (all of them when nothing is flagged)."""
    return values if usable is None else list(compress(values, usable))


def set_stats(
    layout: SetLayout, *, distributions: bool = True, flagged: Set[str] | None = None, honour_flags: bool = True
) -> dict[str, Any]:
    """Totals over the done shards; with `distributions`, score distributions and top subjects too.

    With `honour_flags`, samples whose key is in `flagged` (default: the set's flags file) are
    counted in `num_flagged` and left out of rounds, subjects and distributions; `num_usable`
    is what remains. Without it, every sample on disk counts and the flag fields are absent
    (what dataset.json records when a job closes the set).
    """
    if not honour_flags:
        flagged = frozenset()
    elif flagged is None:
        flagged = flagged_keys(layout.root)
    status: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    rounds: Counter[int] = Counter()
    subjects: Counter[str] = Counter()
    scores: dict[str, list[float]] = {}
    quality: dict[str, list[float]] = {}
    num_samples = num_inputs = num_bytes = num_flagged = 0
    numbers = layout.done_numbers()
    for number in numbers:
        stats = layout.read_stats(number)
        num_samples += stats["nsamples"]
        num_inputs += stats["num_inputs"]
        num_bytes += stats["filesize"]
        status.update(stats["status"])
        for state, counts in stats["reasons"].items():
            reasons.setdefault(state, Counter()).update(counts)
        samples = stats["samples"]
        usable = [key not in flagged for key in samples["key"]] if flagged else None
        if usable is not None:
            num_flagged += usable.count(False)
        rounds.update(_kept(samples["round"], usable))
        if distributions:
            subjects.update(_kept(samples["subject"], usable))
            for name, values in samples["scores"].items():
                scores.setdefault(name, []).extend(_kept(values, usable))
            for name, values in samples["quality"].items():
                quality.setdefault(name, []).extend(_kept(values, usable))
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "prefix": layout.prefix,
        "num_shards": len(numbers),
        "num_samples": num_samples,
        **({"num_flagged": num_flagged, "num_usable": num_samples - num_flagged} if honour_flags else {}),
        "num_inputs": num_inputs,
        "num_bytes": num_bytes,
        "status": {s: status.get(s, 0) for s in ("ok", "skipped", "failed")},
        "reasons": {state: dict(c.most_common()) for state, c in sorted(reasons.items())},
        "rounds": {str(r): n for r, n in sorted(rounds.items())},
    }
    if distributions:
        result["subjects"] = dict(subjects.most_common(TOP_SUBJECTS))
        result["scores"] = {name: distribution(v) for name, v in sorted(scores.items())}
        result["quality"] = {name: distribution(v) for name, v in sorted(quality.items())}
    return result


def shard_set_stats(root: str | Path) -> dict[str, Any]:
    """`set_stats` of the set in `root`, plus whether its index agrees with its done shards."""
    layout = detect_layout(Path(root))
    result = set_stats(layout)
    try:
        index = read_index(layout)
    except (FileNotFoundError, ValueError):
        result["index"] = "missing: the set is open or was never closed"
    else:
        indexed = sum(e["nsamples"] for e in index["shardlist"])
        agrees = len(index["shardlist"]) == result["num_shards"] and indexed == result["num_samples"]
        result["index"] = "ok" if agrees else f"stale: lists {indexed} samples; run `cafe shards index`"
    return result
