"""`shardindex.json`: the wids shard index (url, nsamples, filesize, md5 per shard).

Urls are relative to the index's folder, which is how wids resolves them, so a set can be
moved or copied as a folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cafe_core.layout import SetLayout, atomic_write
from cafe_core.tario import HashingReader, iter_tar_members

INDEX_KIND = "wids-shard-index-v1"


def index_entry_from_stats(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("url", "nsamples", "filesize", "md5")}


def scan_tar(path: Path) -> dict[str, Any]:
    """Index entry measured from the file itself: reads it once for md5 and sample count."""
    keys = set()
    with open(path, "rb") as f:
        stream = HashingReader(f)
        for name, _ in iter_tar_members(stream):
            keys.add(name.rsplit("/", 1)[-1].split(".", 1)[0])
        md5 = stream.drain()
    return {"url": path.name, "nsamples": len(keys), "filesize": path.stat().st_size, "md5": md5}


def build_index(
    layout: SetLayout,
    *,
    from_files: bool = False,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The index of the done shards of a set.

    By default it trusts each shard's stats.json (written from the bytes as they went out);
    `from_files` rescans every tar instead, for a set whose stats were lost or edited.
    """
    entries = []
    for number in layout.done_numbers():
        if from_files:
            entries.append(scan_tar(layout.tar_path(number)))
        else:
            entries.append(index_entry_from_stats(layout.read_stats(number)))
        if on_shard:
            on_shard(number)
    return {"__kind__": INDEX_KIND, "wids_version": 1, "name": layout.root.name, "shardlist": entries}


def write_index(layout: SetLayout, index: dict[str, Any], pid: int, fsync: bool = True) -> Path:
    path = layout.index_path
    atomic_write(path, json.dumps(index, indent=1).encode(), layout.temp_path(path, pid), fsync)
    return path


def read_index(layout: SetLayout) -> dict[str, Any]:
    path = layout.index_path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard index; close the set or run `cafe shards index {layout.root}`")
    index = json.loads(path.read_text())
    if not isinstance(index, dict) or not isinstance(index.get("shardlist"), list):
        raise ValueError(f"{path}: not a wids shard index (no shardlist); rebuild with `cafe shards index`")
    return index
