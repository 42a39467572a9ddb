"""Reading chosen samples by key, without scanning the whole set.

Each done shard's stats.json lists its keys, so a key maps to its shard from the json alone
and only the shards holding the wanted keys are read.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cafe_core.layout import SetLayout
from cafe_core.reader import iter_samples
from cafe_core.triple import Triple, decode_triple


def key_locations(layout: SetLayout) -> dict[str, int]:
    """key -> shard number, for every sample in the done shards."""
    return {key: n for n in layout.done_numbers() for key in layout.read_stats(n)["samples"]["key"]}


def read_keys(layout: SetLayout, keys: Sequence[str]) -> list[Triple]:
    """The triples with these keys, in the order asked. KeyError names keys not in the set."""
    where = key_locations(layout)
    unknown = [k for k in keys if k not in where]
    if unknown:
        raise KeyError(
            f"{len(unknown)} key(s) not in {layout.root}, e.g. {unknown[0]!r}; `cafe shards ls DIR --keys` lists them"
        )
    wanted: dict[int, set[str]] = {}
    for key in keys:
        wanted.setdefault(where[key], set()).add(key)
    found: dict[str, Triple] = {}
    for number, shard_keys in sorted(wanted.items()):
        for key, members in iter_samples(layout.tar_path(number)):
            if key in shard_keys:
                found[key] = decode_triple(key, members)
                if shard_keys <= found.keys():
                    break
    return [found[k] for k in keys]


def random_keys(layout: SetLayout, count: int, seed: int = 0) -> list[str]:
    """Up to `count` keys drawn without replacement, reproducibly for a seed."""
    keys = sorted(key_locations(layout))
    return random.Random(seed).sample(keys, min(count, len(keys)))
