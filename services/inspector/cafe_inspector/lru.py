"""A small thread-safe LRU cache bounded by entries and, optionally, bytes.

The API answers from a thread pool, so shard listings and thumbnails are shared between
threads; a value may be computed twice when two threads miss at once, which is harmless
(both compute the same thing) and cheaper than holding a lock through a decode.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, max_items: int, max_bytes: int | None = None, size_of: Callable[[V], int] | None = None) -> None:
        if max_items < 1:
            raise ValueError(f"LRU: max_items must be >= 1, got {max_items}")
        if max_bytes is not None and size_of is None:
            raise ValueError("LRU: max_bytes needs size_of to measure values")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[K, V] = OrderedDict()
        self._num_bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        size = self._size_of(value) if self._size_of else 0
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None and self._size_of:
                self._num_bytes -= self._size_of(old)
            self._items[key] = value
            self._num_bytes += size
            while len(self._items) > self.max_items or (
                self.max_bytes is not None and self._num_bytes > self.max_bytes and len(self._items) > 1
            ):
                _, evicted = self._items.popitem(last=False)
                if self._size_of:
                    self._num_bytes -= self._size_of(evicted)

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = load()
            self.put(key, value)
        return value
