"""A small LRU cache of rewrite results, keyed by text, history and image content hashes."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from .images import PreparedImage
from .types import HistoryTurn, RewriteResult

__all__ = [
    "RewriteCache",
    "cache_key",
]


def cache_key(text: str, images: list[PreparedImage], history: list[HistoryTurn]) -> str:
    """A digest that changes with the text, any history turn, or any image's content."""
    digest = hashlib.sha256()
    for turn in history:
        digest.update(f"{turn.role}\x00{turn.images}\x00{turn.text}\x01".encode())
    digest.update(text.encode())
    for image in images:
        digest.update(b"\x02" + image.sha256.encode())
    return digest.hexdigest()


class RewriteCache:
    """Thread-safe LRU map from :func:`cache_key` to a :class:`RewriteResult`."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._items: OrderedDict[str, RewriteResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> RewriteResult | None:
        with self._lock:
            result = self._items.get(key)
            if result is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return result

    def put(self, key: str, result: RewriteResult) -> None:
        with self._lock:
            self._items[key] = result
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
