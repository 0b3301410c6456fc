"""Gather concurrent requests into batches for a model that is faster batched."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)  # compared by identity: items may not support ==
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass
class _LoopState(Generic[Item, Result]):
    """What one event loop has in flight with a batcher.

    It refers to its loop only through the futures of pending items (no timer handle,
    no loop-bound lock), and is dropped as soon as nothing is pending, so a finished
    loop is never kept alive by the batcher.
    """

    queues: dict[Hashable, list[_Pending[Item, Result]]] = field(default_factory=dict)
    backlog: deque[list[_Pending[Item, Result]]] = field(default_factory=deque)
    runner: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        return not self.queues and not self.backlog and self.runner is None


class MicroBatcher(Generic[Item, Result]):
    """Collects items submitted concurrently and runs them as one batch.

    A batch closes when it has ``max_batch_size`` items or ``max_wait_ms`` after its
    first item, whichever is first. Items only share a batch when ``group_key`` gives
    them the same key (for example the same generation settings).  ``run_batch``
    runs in a worker thread, one batch at a time per event loop, so the loop stays
    free.

    One batcher serves any number of event loops (each ``asyncio.run`` makes a new
    one). Per-loop state lives only while that loop has items pending, in a mapping
    that holds its loops weakly, so a batcher never keeps a finished loop alive.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        group_key: Callable[[Item], Hashable] = lambda item: None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_ms = max(0.0, max_wait_ms)
        self.group_key = group_key
        self.batch_sizes: list[int] = []
        self._states: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopState[Item, Result]
        ] = weakref.WeakKeyDictionary()

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        key = self.group_key(item)
        pending: _Pending[Item, Result] = _Pending(item=item, future=loop.create_future())
        queue = state.queues.get(key)
        if queue is None:
            queue = state.queues[key] = []
            # Not cancelled when the batch fills first: it then finds its queue gone.
            loop.call_later(self.max_wait_ms / 1000.0, self._close, loop, state, key, queue)
        queue.append(pending)
        if len(queue) >= self.max_batch_size:
            self._close(loop, state, key, queue)
        try:
            return await pending.future
        except asyncio.CancelledError:  # the caller gave up: its item need not run
            self._withdraw(loop, state, key, pending)
            raise

    def _close(
        self,
        loop: asyncio.AbstractEventLoop,
        state: _LoopState[Item, Result],
        key: Hashable,
        queue: list[_Pending[Item, Result]],
    ) -> None:
        """Close ``queue`` as a batch, unless it already was (or was withdrawn)."""
        if state.queues.get(key) is not queue:
            return
        del state.queues[key]
        state.backlog.append(queue)
        if state.runner is None:
            state.runner = loop.create_task(self._drain(loop, state))

    def _withdraw(
        self,
        loop: asyncio.AbstractEventLoop,
        state: _LoopState[Item, Result],
        key: Hashable,
        pending: _Pending[Item, Result],
    ) -> None:
        queue = state.queues.get(key)
        if queue is not None:
            queue[:] = [p for p in queue if p is not pending]
            if not queue:
                del state.queues[key]
        self._forget_if_idle(loop, state)

    def _forget_if_idle(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState[Item, Result]
    ) -> None:
        if state.idle() and self._states.get(loop) is state:
            del self._states[loop]

    async def _drain(
        self, loop: asyncio.AbstractEventLoop, state: _LoopState[Item, Result]
    ) -> None:
        """Run the loop's closed batches one at a time, until none is left."""
        live: list[_Pending[Item, Result]] = []
        try:
            while state.backlog:
                live = [p for p in state.backlog.popleft() if not p.future.done()]
                if live:
                    await self._run(live)
                live = []
        finally:
            # Cancelled (the loop is shutting down): nobody must wait for ever.
            for batch in (live, *state.backlog):
                for p in batch:
                    p.future.cancel()
            state.backlog.clear()
            state.runner = None
            self._forget_if_idle(loop, state)

    async def _run(self, live: list[_Pending[Item, Result]]) -> None:
        self.batch_sizes.append(len(live))
        try:
            results = await asyncio.to_thread(self.run_batch, [p.item for p in live])
            if len(results) != len(live):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(live)} items"
                )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every waiter must learn of the failure
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(live, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
