"""A process-wide cap on the memory that decoded images of requests in flight hold.

The per-request decode budget (``ImageLimits.max_decoded_bytes``) bounds one request;
concurrent requests each get their own.  This pool bounds their sum: a request whose
images need more than is left waits (within its deadline) until earlier requests
finish, instead of every attacker's image being decoded at once.

Hand-written because the waiting happens in worker threads (decoding runs there) while
the reservation's owner is a coroutine that may be cancelled at any point: no library
semaphore releases a permit that a thread acquires after its owner has gone.
"""

from __future__ import annotations

import threading

from .errors import ImageTooLargeError

DEFAULT_POOL_BYTES = 1024 * 1024 * 1024
"""Default capacity of the process-wide pool (1 GiB)."""


class DecodeMemoryPool:
    """Bytes of decoded images that requests in flight may hold together.

    A single request larger than the whole pool is let through when the pool is idle
    (its own per-request budget bounds it), so a small pool never refuses everything.
    """

    def __init__(self, capacity: int = DEFAULT_POOL_BYTES) -> None:
        self.capacity = capacity
        self._used = 0
        self._condition = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        return self._used

    def reservation(self) -> Reservation:
        """A reservation to fill from a worker thread and release from its owner."""
        return Reservation(self)

    def _acquire(self, amount: int, timeout: float | None) -> None:
        with self._condition:
            fits = self._condition.wait_for(
                lambda: self._used == 0 or self._used + amount <= self.capacity, timeout
            )
            if not fits:
                raise ImageTooLargeError(
                    f"the images need {amount} bytes of memory to decode and other requests "
                    f"hold the rest of the {self.capacity}-byte pool; try again later"
                )
            self._used += amount

    def _release(self, amount: int) -> None:
        with self._condition:
            self._used -= amount
            self._condition.notify_all()


class Reservation:
    """Memory reserved for one request; released once, even if filled after release."""

    def __init__(self, pool: DecodeMemoryPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        self._held = 0
        self._closed = False

    def acquire(self, amount: int, timeout: float | None) -> None:
        """Reserve ``amount`` bytes, waiting at most ``timeout`` s (from a worker thread).

        Raises:
            ImageTooLargeError: the pool stayed full for ``timeout`` seconds.
        """
        self._pool._acquire(amount, timeout)
        with self._lock:
            if not self._closed:
                self._held += amount
                return
        self._pool._release(amount)  # the owner gave up (its deadline) while we waited

    def release(self) -> None:
        """Give back everything reserved; later acquisitions are given back at once."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, 0
        if held:
            self._pool._release(held)


SHARED_POOL = DecodeMemoryPool()
"""The pool every :class:`~vlmguard_plugins.Rewriter` uses unless given its own."""

__all__ = ["DEFAULT_POOL_BYTES", "SHARED_POOL", "DecodeMemoryPool", "Reservation"]
