"""Decoded datasets a process keeps, bounded in bytes rather than in count.

A count bound (the four most recent) let a process hold four uploads at the upload
cap, gigabytes, after a handful of requests. Here the arrays' total size is bounded
(COUNTERWEIGHT_DATASET_CACHE_BYTES); the least recently used go first, and a dataset
larger than the whole budget is used once and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class BytesBoundedCache(Generic[Value]):
    """A least-recently-used cache whose values' sizes (`size_of`) add up to at most
    `max_bytes`. One load at a time: a burst of requests for a dataset not yet cached
    decodes it once, not once per request."""

    def __init__(self, max_bytes: int, size_of: Callable[[Value], int]) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._entries: OrderedDict[Hashable, tuple[Value, int]] = OrderedDict()
        self._loading = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, load: Callable[[], Value]) -> Value:
        with self._loading:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key][0]
            self.misses += 1
            value = load()
            size = self._size_of(value)
            if size <= self.max_bytes:
                self._entries[key] = (value, size)
                while self.held_bytes > self.max_bytes:
                    self._entries.popitem(last=False)
            return value

    @property
    def held_bytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def clear(self) -> None:
        with self._loading:
            self._entries.clear()
            self.hits = self.misses = 0
