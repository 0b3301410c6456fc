"""Run coroutines from synchronous code on one private, long-lived event loop.

A single loop (rather than ``asyncio.run`` per call) keeps loop-bound state such as
a backend's batching queue valid across calls, and works from inside a running
loop (a notebook) because the coroutine runs on another thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = [
    "LoopThread",
]

T = TypeVar("T")


class LoopThread:
    """A daemon thread running an event loop; ``run`` blocks until a coroutine is done."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="vlmguard-sync-loop", daemon=True
                )
                thread.start()
                self._loop = loop
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._ensure()).result()

    def stop(self) -> None:
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
