"""A small LRU cache of rewrite results, keyed by text, history and image content hashes."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict

from .images import PreparedImage
from .types import HistoryTurn, RewriteResult

__all__ = [
    "RewriteCache",
    "cache_key",
]


def cache_key(text: str, images: list[PreparedImage], history: list[HistoryTurn]) -> str:
    """A digest that changes with the text, any history turn, or any image's content.

    The fields are JSON-encoded before hashing: with separators instead, a client's
    text holding the separator could make one conversation's key equal another's.
    """
    fields = {
        "history": [[turn.role, turn.images, turn.text] for turn in history],
        "text": text,
        "images": [image.sha256 for image in images],
    }
    encoded = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


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
