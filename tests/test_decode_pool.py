"""The process-wide decode pool: concurrent requests cannot all decode at once."""

from __future__ import annotations

import asyncio
import io
import threading

import pytest
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.decode_pool import DecodeMemoryPool
from vlmguard_plugins.errors import ImageTooLargeError
from vlmguard_plugins.testing import ScriptedBackend


def _png(side: int, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class WatchedPool(DecodeMemoryPool):
    """A pool that records the most memory reserved at once."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.peak = 0
        self._lock = threading.Lock()

    def _acquire(self, amount: int, timeout: float | None) -> None:
        super()._acquire(amount, timeout)
        with self._lock:
            self.peak = max(self.peak, self.used)


async def test_concurrent_requests_share_one_memory_pool() -> None:
    image = _png(1500, "red")  # 2.25 Mpx: decoded in a thread, through the pool
    pool = WatchedPool(capacity=12_000_000)  # room for one such request at a time
    backend = ScriptedBackend(delay_s=0.05)
    rewriter = Rewriter(backend, decode_pool=pool, timeout_s=30)
    results = await asyncio.gather(*(rewriter.arewrite("q", images=[image]) for _ in range(4)))
    assert all(result.fallback is None for result in results)
    assert pool.peak > 0
    assert pool.peak < 2 * 9_000_000  # never two requests' images at once
    assert pool.used == 0  # everything given back


async def test_a_full_pool_times_out_as_a_typed_error() -> None:
    pool = DecodeMemoryPool(capacity=1_000)
    held = pool.reservation()
    held.acquire(900, timeout=1)
    rewriter = Rewriter(ScriptedBackend(), decode_pool=pool, timeout_s=0.3, on_error="raise")
    with pytest.raises((ImageTooLargeError, TimeoutError)):
        await rewriter.arewrite("q", images=[_png(1500, "blue")])
    held.release()
    assert pool.used == 0


def test_a_reservation_filled_after_release_gives_the_memory_back() -> None:
    pool = DecodeMemoryPool(capacity=100)
    reservation = pool.reservation()
    reservation.release()
    reservation.acquire(50, timeout=1)
    assert pool.used == 0
