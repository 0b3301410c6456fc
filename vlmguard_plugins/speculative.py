"""Speculative mode: call the model on the original request while the guard runs.

Guarding adds the rewriter's latency in front of the model's.  In speculative mode the
original request goes to the model at the same time as the guard reads it; the model's
answer is held, chunk by chunk, until the guard's verdict:

- the verdict allows it (:func:`releasable`: risk none or low, nothing rewritten,
  nothing dropped, so the guarded conversation *is* the original): the held answer is
  released, then the rest of it as it arrives (a *hit*);
- anything else: the original call is cancelled (its stream closed, so the upstream
  stops generating) and the guarded request is sent instead (a *miss*); a guarded
  call that refuses (a block) raises as it would without speculation;
- the guard raises (input it cannot check): the original call is cancelled and the
  error raised.

Nothing of the speculative answer reaches the caller before the verdict.  The same
primitive serves the gateway and the framework adapters::

    stats = SpeculationStats()
    async for chunk in speculate(
        rewriter.aguard(conversation),
        original=lambda: vlm.stream(conversation),
        guarded=lambda g: vlm.stream(g.conversation),
        stats=stats,
    ):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .conversation.guard import GuardedConversation
from .errors import ConfigurationError
from .types import Risk

T = TypeVar("T")

_RELEASABLE_RISKS = (Risk.NONE, Risk.LOW)


@dataclass
class SpeculationStats:
    """Counters of speculative calls (plain ints: safe within one event loop).

    ``hits``: the original answer was released; ``misses``: the verdict sent the
    guarded request instead; ``wasted_calls``: original calls cancelled or discarded
    (a miss, or a guard that raised).
    """

    hits: int = 0
    misses: int = 0
    wasted_calls: int = 0


def releasable(guarded: GuardedConversation) -> bool:
    """Whether the verdict lets the answer to the original request be released.

    True only when the guarded conversation is exactly the original: the rewriter
    judged the request risk none or low and left it unchanged, and no part was
    dropped; or there was nothing to guard at all.  A failure-policy result is never
    releasable: its risk is unknown, whatever its prompt.
    """
    if guarded.dropped:
        return False
    result = guarded.result
    if result is None:
        return True
    return (
        result.fallback is None
        and not result.changed
        and result.prompt == result.original
        and result.risk in _RELEASABLE_RISKS
    )


class _Failed:
    """The original call raised: the error travels to the consumer through the queue."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _HeldAnswer(Generic[T]):
    """Reads the original answer in a task, holding its chunks until they are taken.

    With ``limit`` set, at most that many chunks are read and not yet taken: the task
    stops reading the original (and so, over HTTP, the upstream is slowed by flow
    control) until the consumer takes one.
    """

    def __init__(self, original: Callable[[], AsyncIterator[T]], limit: int | None) -> None:
        self._chunks: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Semaphore(limit) if limit is not None else None
        self.task = asyncio.ensure_future(self._read(original))

    async def _read(self, original: Callable[[], AsyncIterator[T]]) -> None:
        stream: AsyncIterator[T] | None = None
        try:
            stream = original()
            while True:
                if self._room is not None:
                    await self._room.acquire()
                try:
                    chunk = await stream.__anext__()
                except StopAsyncIteration:
                    self._put(_END)
                    return
                self._put(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the model's own error: the consumer decides
            self._put(_Failed(error))
        finally:
            # Closing the stream runs its ``finally``: an HTTP response is closed, so
            # a cancelled call stops the upstream instead of generating on unread.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def _put(self, item: Any) -> None:
        self._chunks.append(item)
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            while not self._chunks:
                self._ready.clear()
                await self._ready.wait()
            item = self._chunks.popleft()
            if self._room is not None:
                self._room.release()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    async def cancel(self) -> None:
        await _cancel_and_wait(self.task)


async def _cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished, keeping its outcome to itself.

    A cancellation of the caller while waiting still propagates; the task, already
    cancelled, then finishes on its own.
    """
    if not task.done():
        task.cancel()
        try:
            # ``wait`` never raises the task's own exception.
            await asyncio.wait((task,))
        finally:
            task.add_done_callback(_retrieve)
    _retrieve(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # Marks the outcome as seen: a cancelled call's error must not be logged as lost.
    if task.done() and not task.cancelled():
        task.exception()


def _validate_limit(max_held_chunks: int | None, guard: Awaitable[Any]) -> None:
    if max_held_chunks is not None and max_held_chunks < 1:
        if isinstance(guard, Coroutine):
            guard.close()  # never started: closed, so that it is not reported as forgotten
        raise ConfigurationError(f"max_held_chunks must be at least 1, not {max_held_chunks}")


async def speculate(
    guard: Awaitable[GuardedConversation],
    original: Callable[[], AsyncIterator[T]],
    guarded: Callable[[GuardedConversation], AsyncIterator[T]],
    stats: SpeculationStats | None = None,
    max_held_chunks: int | None = None,
) -> AsyncIterator[T]:
    """Stream the model's answer, calling it on the original request while the guard runs.

    Args:
        guard: the running guard, such as ``rewriter.aguard(conversation)``.
        original: starts the model call on the original request and yields its chunks.
        guarded: the model call on the guarded request, called on a miss (it may raise,
            for a block).
        stats: counters to update (hits, misses, wasted calls).
        max_held_chunks: the most chunks of the original answer held before the verdict;
            past it the original stream is not read until the verdict (backpressure).

    Yields:
        The original answer's chunks (held ones first, then live) when the verdict is
        :func:`releasable`, otherwise the guarded call's chunks.

    Raises:
        ConfigurationError: ``max_held_chunks`` below 1.
        InputError: whatever the guard raises (the original call is cancelled first).
    """
    _validate_limit(max_held_chunks, guard)
    verdict = asyncio.ensure_future(guard)
    held = _HeldAnswer(original, max_held_chunks)
    try:
        try:
            guarded_conversation = await verdict
        except BaseException:
            if stats is not None:
                stats.wasted_calls += 1
            raise
        if releasable(guarded_conversation):
            if stats is not None:
                stats.hits += 1
            async for chunk in held:
                yield chunk
            return
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += 1
        await held.cancel()
        async for chunk in guarded(guarded_conversation):
            yield chunk
    finally:
        # Also reached when the caller stops reading early or is cancelled: no task of
        # ours outlives the call.
        await _cancel_and_wait(verdict)
        await held.cancel()


async def speculate_once(
    guard: Awaitable[GuardedConversation],
    original: Callable[[], Awaitable[T]],
    guarded: Callable[[GuardedConversation], Awaitable[T]],
    stats: SpeculationStats | None = None,
) -> T:
    """The non-streaming :func:`speculate`: one answer, released or replaced at the verdict.

    Raises:
        InputError: whatever the guard raises (the original call is cancelled first).
    """
    verdict = asyncio.ensure_future(guard)
    answer = asyncio.ensure_future(_call(original))
    try:
        try:
            guarded_conversation = await verdict
        except BaseException:
            if stats is not None:
                stats.wasted_calls += 1
            raise
        if releasable(guarded_conversation):
            if stats is not None:
                stats.hits += 1
            return await answer
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += 1
        await _cancel_and_wait(answer)
        return await guarded(guarded_conversation)
    finally:
        await _cancel_and_wait(verdict)
        await _cancel_and_wait(answer)


async def _call(original: Callable[[], Awaitable[T]]) -> T:
    # Inside the task, so that a call that fails at once fails there, like a late one.
    return await original()


__all__ = ["SpeculationStats", "releasable", "speculate", "speculate_once"]
