"""Speculative mode: call the model on the original request while the rewriter runs.

Guarding adds the rewriter's latency in front of the model's.  In speculative mode the
guard first checks the input as it always does (coverage of every part, the text and
history limits, every image loaded and decoded within the image limits and the URL
policy); only once all of that has passed does the original request go to the model,
at the same time as the rewriter model reads it.  Input the guard refuses therefore
never reaches the model, speculative or not.  The model's answer is held, chunk by
chunk, until the guard's verdict:

- the verdict allows it (:func:`releasable`: risk none or low, nothing rewritten,
  nothing dropped, so the guarded conversation *is* the original): the held answer is
  released, then the rest of it as it arrives (a *hit*);
- anything else: the original call is cancelled (its stream closed, so the upstream
  stops generating) and the guarded request is sent instead (a *miss*); a guarded
  call that refuses (a block) raises as it would without speculation;
- the guard raises: the error is raised (input it cannot check raises before the
  original call starts; a later error cancels it).

The guard tells that its input checks have passed through
:func:`~vlmguard_plugins.conversation.inputs_checked_callback`, which the functions here
set around the guard; a guard that never tells (one that does not run the rewriter, or
drops parts under ``unsupported_content="drop"``) simply gets no overlap: the model is
called after the verdict.

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
import contextvars
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from .conversation.guard import GuardedConversation, inputs_checked_callback
from .errors import ConfigurationError
from .types import RewriteResult, Risk

T = TypeVar("T")


class Verdict(Protocol):
    """What the guard's outcome must tell: the rewrite and the parts dropped.

    :class:`~vlmguard_plugins.GuardedConversation` is one; an adapter may pass its own
    (LlamaIndex's ``GuardedMessages``), so that a miss gets the guarded request in the
    adapter's own form.
    """

    @property
    def result(self) -> RewriteResult | None: ...

    @property
    def dropped(self) -> tuple[str, ...]: ...


V = TypeVar("V", bound=Verdict)

_RELEASABLE_RISKS = (Risk.NONE, Risk.LOW)

REDELIVER_S = 0.05
"""Seconds between deliveries of a cancellation the original call has not yet seen."""


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


def releasable(guarded: GuardedConversation | Verdict) -> bool:
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
        self.call = _Call(self._read(original))

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
            self.call.seen = True  # from here on, only the stream's own closing runs
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


class _Call:
    """A task running the original model call, whose cancellation is delivered for sure.

    A client library may swallow a cancellation that arrives at an unlucky moment
    (while it dispatches a callback, say) and read on: the upstream would then generate
    the whole answer for nobody.  So the cancellation is delivered again, every
    :data:`REDELIVER_S` seconds, until the call has seen one.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.seen = False
        self.task = asyncio.ensure_future(self._run(coroutine))

    async def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coroutine
        except asyncio.CancelledError:
            self.seen = True
            raise

    async def cancel(self) -> None:
        """Cancel the call and wait until it has finished, keeping its outcome to itself."""
        task = self.task
        try:
            while not task.done() and not self.seen:
                task.cancel()
                await asyncio.wait((task,), timeout=REDELIVER_S)
            if not task.done():
                await asyncio.wait((task,))
        finally:
            task.add_done_callback(_retrieve)


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


def _validate_limit(max_held_chunks: int | None, guard: Awaitable[Any] | None) -> None:
    if max_held_chunks is not None and max_held_chunks < 1:
        if isinstance(guard, Coroutine):
            guard.close()  # never started: closed, so that it is not reported as forgotten
        raise ConfigurationError(f"max_held_chunks must be at least 1, not {max_held_chunks}")


class _Checked:
    """Opened (from any thread) when the guard's input checks have passed."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def open(self) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self.event.set()
        else:  # a synchronous guard's loop thread, say
            with contextlib.suppress(RuntimeError):  # this loop closed meanwhile
                self._loop.call_soon_threadsafe(self.event.set)


def _start_guard(guard: Awaitable[V], checked: _Checked) -> asyncio.Future[V]:
    # The task copies the context here, so the guard (and the rewriter it runs) sees
    # the callback; this task's own context is left as it was.
    with inputs_checked_callback(checked.open):
        return asyncio.ensure_future(guard)


async def _until_checked(verdict: asyncio.Future[Any], checked: _Checked) -> bool:
    """Wait for the input checks or the verdict; True when the original may start now."""
    opened = asyncio.ensure_future(checked.event.wait())
    try:
        await asyncio.wait((verdict, opened), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_and_wait(opened)
    # With the verdict in, there is nothing left to overlap: it decides directly.
    return checked.event.is_set() and not verdict.done()


async def speculate(
    guard: Awaitable[V],
    original: Callable[[], AsyncIterator[T]],
    guarded: Callable[[V], AsyncIterator[T]],
    stats: SpeculationStats | None = None,
    max_held_chunks: int | None = None,
) -> AsyncIterator[T]:
    """Stream the model's answer, calling it on the original request while the rewriter runs.

    ``original`` is called only once the guard has checked the input (see the module):
    input the guard refuses never reaches the model.

    Args:
        guard: the guard, not yet started, such as ``rewriter.aguard(conversation)`` (its
            outcome: a :class:`~vlmguard_plugins.GuardedConversation`, or any
            :class:`Verdict`).
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
        InputError: whatever the guard raises (before the original call starts).
    """
    _validate_limit(max_held_chunks, guard)
    checked = _Checked()
    verdict = _start_guard(guard, checked)
    held: _HeldAnswer[T] | None = None
    try:
        if await _until_checked(verdict, checked):
            held = _HeldAnswer(original, max_held_chunks)
        try:
            outcome = await verdict
        except BaseException:
            if stats is not None and held is not None:
                stats.wasted_calls += 1
            raise
        if releasable(outcome):
            if stats is not None:
                stats.hits += 1
            if held is None:  # the verdict came first: nothing to overlap
                held = _HeldAnswer(original, max_held_chunks)
            async for chunk in held:
                yield chunk
            return
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += held is not None
        if held is not None:
            await held.call.cancel()
        async for chunk in guarded(outcome):
            yield chunk
    finally:
        # Also reached when the caller stops reading early or is cancelled: no task of
        # ours outlives the call.
        await _cancel_and_wait(verdict)
        if held is not None:
            await held.call.cancel()


async def speculate_once(
    guard: Awaitable[V],
    original: Callable[[], Awaitable[T]],
    guarded: Callable[[V], Awaitable[T]],
    stats: SpeculationStats | None = None,
) -> T:
    """The non-streaming :func:`speculate`: one answer, released or replaced at the verdict.

    Raises:
        InputError: whatever the guard raises (before the original call starts).
    """
    # The steps of speculate, for one awaited answer: an async generator cannot return one.
    checked = _Checked()
    verdict = _start_guard(guard, checked)
    answer: _Call | None = None
    try:
        if await _until_checked(verdict, checked):
            answer = _Call(_call(original))
        try:
            outcome = await verdict
        except BaseException:
            if stats is not None and answer is not None:
                stats.wasted_calls += 1
            raise
        if releasable(outcome):
            if stats is not None:
                stats.hits += 1
            if answer is None:  # the verdict came first: nothing to overlap
                return await original()
            result: T = await answer.task
            return result
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += answer is not None
        if answer is not None:
            await answer.cancel()
        return await guarded(outcome)
    finally:
        await _cancel_and_wait(verdict)
        if answer is not None:
            await answer.cancel()


# -- synchronous callers ----------------------------------------------------------------


class _CheckedSync:
    """Tells a worker thread whether the original call may start (see :class:`_Checked`)."""

    def __init__(self) -> None:
        self._decided = threading.Event()
        self._opened = False

    def open(self) -> None:
        self._opened = True
        self._decided.set()

    def close(self) -> None:
        """The verdict is in: a call not yet allowed is never started by the worker."""
        self._decided.set()

    def wait(self) -> bool:
        self._decided.wait()
        return self._opened


def _run_guard_sync(guard: Callable[[], V], checked: _CheckedSync) -> V:
    try:
        with inputs_checked_callback(checked.open):
            return guard()
    finally:
        checked.close()


_NOT_STARTED = object()


def speculate_once_sync(
    guard: Callable[[], V],
    original: Callable[[], T],
    guarded: Callable[[V], T],
    stats: SpeculationStats | None = None,
) -> T:
    """:func:`speculate_once` for synchronous code: the original call runs in a thread.

    The thread starts the call once the guard has checked the input (the guard's
    callback is carried by the caller's context into a synchronous
    :meth:`~vlmguard_plugins.Rewriter.guard`).  A synchronous call cannot be
    interrupted: on a miss its answer is discarded when it comes (counted in
    ``wasted_calls``).
    """
    checked = _CheckedSync()

    def when_checked() -> Any:
        return original() if checked.wait() else _NOT_STARTED

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmguard-speculative")
    try:
        # The caller's context (tracing, callbacks) goes with the call into the thread.
        pending = executor.submit(contextvars.copy_context().run, when_checked)
        try:
            outcome = _run_guard_sync(guard, checked)
        except BaseException:
            if stats is not None and checked.wait():
                stats.wasted_calls += 1
            raise
        started = checked.wait()
        if releasable(outcome):
            if stats is not None:
                stats.hits += 1
            answer = pending.result()
            return original() if answer is _NOT_STARTED else cast(T, answer)
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += started
        return guarded(outcome)
    finally:
        executor.shutdown(wait=False)


def speculate_sync(
    guard: Callable[[], V],
    original: Callable[[], Iterator[T]],
    guarded: Callable[[V], Iterator[T]],
    stats: SpeculationStats | None = None,
    max_held_chunks: int | None = None,
) -> Iterator[T]:
    """:func:`speculate` for synchronous code: the original stream is read in a thread.

    The thread opens the stream once the guard has checked the input.  On a miss (or
    when the caller stops reading) it stops at the original stream's next chunk and
    closes it (``close()``: a synchronous HTTP stream is closed there), since a thread
    blocked in a read cannot be interrupted.
    """
    _validate_limit(max_held_chunks, None)
    held: queue.Queue[Any] = queue.Queue(maxsize=max_held_chunks or 0)
    stop = threading.Event()
    checked = _CheckedSync()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                held.put(item, timeout=REDELIVER_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        if not checked.wait():
            return
        stream: Iterator[T] | None = None
        try:
            stream = original()
            for chunk in stream:
                if stop.is_set() or not put(chunk):
                    return
            put(_END)
        except Exception as error:  # the model's own error: the consumer decides
            put(_Failed(error))
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    context = contextvars.copy_context()
    threading.Thread(
        target=context.run, args=(read,), name="vlmguard-speculative", daemon=True
    ).start()
    try:
        try:
            outcome = _run_guard_sync(guard, checked)
        except BaseException:
            if stats is not None and checked.wait():
                stats.wasted_calls += 1
            raise
        started = checked.wait()
        if releasable(outcome):
            if stats is not None:
                stats.hits += 1
            if not started:  # the verdict came first: nothing to overlap
                yield from original()
                return
            while (item := held.get()) is not _END:
                if isinstance(item, _Failed):
                    raise item.error
                yield item
            return
        if stats is not None:
            stats.misses += 1
            stats.wasted_calls += started
        stop.set()
        yield from guarded(outcome)
    finally:
        stop.set()


async def _call(original: Callable[[], Awaitable[T]]) -> T:
    # Inside the task, so that a call that fails at once fails there, like a late one.
    return await original()


__all__ = [
    "REDELIVER_S",
    "SpeculationStats",
    "Verdict",
    "releasable",
    "speculate",
    "speculate_once",
    "speculate_once_sync",
    "speculate_sync",
]
