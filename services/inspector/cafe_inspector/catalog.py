"""The served folder: the sets below it, each opened lazily, and the thumbnail cache.

Nothing is read at start-up. A set is opened (its index read) the first time a request
names it, and opened again when its index changes, since `cafe shards index` or a new
closing of the set may rewrite it while the browser runs.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cafe_core.layout import INDEX_NAME
from cafe_inspector.errors import InspectorError, NotFound, Unreadable
from cafe_inspector.lru import LRU
from cafe_inspector.paths import find_sets, require_set, resolve_folder, set_id_of
from cafe_inspector.sample_set import SampleSet
from cafe_inspector.thumbnails import Thumbnail, check_request, render

THUMBNAIL_CACHE_BYTES = 128 << 20
THUMBNAIL_CACHE_ITEMS = 20_000


def _fingerprint(folder: Path) -> tuple[Any, ...]:
    """Changes when the set's index is rewritten; for an open set, when a shard gets done."""
    try:
        stat = (folder / INDEX_NAME).stat()
    except FileNotFoundError:
        return ("open", sum(1 for p in folder.iterdir() if p.name.endswith(".stats.json")))
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class Catalog:
    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder to serve; pass a folder holding shard sets")
        self.root = root.resolve()
        self._sets: dict[Path, tuple[tuple[Any, ...], SampleSet]] = {}
        self._lock = threading.Lock()
        self.thumbnails: LRU[tuple[str, str, str, int], Thumbnail] = LRU(
            THUMBNAIL_CACHE_ITEMS, THUMBNAIL_CACHE_BYTES, lambda t: len(t.data)
        )

    def get(self, set_id: str) -> SampleSet:
        """The set `set_id` names; each request pays a path check and one stat (of the index)."""
        folder = resolve_folder(self.root, set_id)
        try:
            fingerprint = _fingerprint(folder)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(
                f"set: {set_id!r} is not a shard set under the served folder; /api/sets lists them"
            ) from None
        with self._lock:
            cached = self._sets.get(folder)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        opened = SampleSet(self.root, require_set(folder, set_id), set_id)
        with self._lock:
            self._sets[folder] = (fingerprint, opened)
        return opened

    def list_sets(self) -> list[dict[str, Any]]:
        """Each set below the root with its counts, from its index (or stats.json while open)."""
        listed = []
        for folder in find_sets(self.root):
            set_id = set_id_of(self.root, folder)
            entry: dict[str, Any] = {"path": set_id, "closed": (folder / "dataset.json").is_file()}
            try:
                opened = self.get(set_id)  # reads the index only (stats.json files while the set is open)
                entry.update(
                    prefix=opened.layout.prefix,
                    num_shards=len(opened.shards),
                    num_samples=opened.num_samples,
                    num_flagged=len(opened.flags()),
                )
            except (InspectorError, OSError, ValueError) as exc:
                entry["problem"] = str(exc)  # list it anyway, so the page can say what is wrong
            listed.append(entry)
        return listed

    def thumbnail(self, set_id: str, key: str, kind: str, size_px: int) -> Thumbnail:
        check_request(kind, size_px)
        sample_set = self.get(set_id)
        number = sample_set.locate(key)
        cache_key = (str(sample_set.folder), key, kind, size_px)
        cached = self.thumbnails.get(cache_key)
        if cached is not None:
            return cached
        members = sample_set.members(number)
        try:
            thumbnail = render(kind, size_px, lambda suffix: members.read(key, suffix), key)
        except Unreadable as exc:
            raise Unreadable(f"set {set_id!r}, shard {sample_set.layout.shard_name(number)}: {exc}") from exc
        self.thumbnails.put(cache_key, thumbnail)
        return thumbnail
