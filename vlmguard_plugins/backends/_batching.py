"""Gather concurrent requests into batches for a model that is faster batched."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Generic, TypeVar

__all__ = [
    "Item",
    "MicroBatcher",
    "Result",
]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)  # compared by identity: items may not support ==
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    arrival: int  # order of submission in its loop: the oldest waiting item goes first


@dataclass
class _LoopState(Generic[Item, Result]):
    """What one event loop has in flight with a batcher.

    It refers to its loop only through the futures of queued items and the task that
    runs the batches, and is dropped as soon as nothing is queued or running, so a
    finished loop is never kept alive by the batcher.
    """

    queues: dict[Hashable, list[_Pending[Item, Result]]] = field(default_factory=dict)
    runner: asyncio.Task[None] | None = None
    arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def idle(self) -> bool:
        return not self.queues and self.runner is None


class MicroBatcher(Generic[Item, Result]):
    """Runs items submitted concurrently as batches, without waiting for companions.

    Continuous-style: an item that arrives while no batch is running starts at once
    (with the items submitted in the same turn of the event loop, as ``asyncio.gather``
    does); items that arrive while a batch runs queue up and form the next batch, which
    starts as soon as the running one finishes. A batch holds at most
    ``max_batch_size`` items, all with the same ``group_key`` (for example the same
    generation settings); the group whose oldest item has waited longest goes first.
    ``run_batch`` runs in a worker thread, one batch at a time per event loop, so the
    loop stays free.

    ``max_wait_ms`` is accepted for compatibility and ignored: waiting for companions
    only delayed a lone request, since companions that arrive later join the next batch
    anyway.

    One batcher serves any number of event loops (each ``asyncio.run`` makes a new
    one). Per-loop state lives only while that loop has items queued or running, in a
    mapping that holds its loops weakly, so a batcher never keeps a finished loop alive.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 0.0,
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
        pending: _Pending[Item, Result] = _Pending(
            item=item, future=loop.create_future(), arrival=next(state.arrivals)
        )
        state.queues.setdefault(key, []).append(pending)
        if state.runner is None:
            # A task's first step runs after the steps already scheduled in this turn of
            # the loop: items submitted together still share the first batch, at no cost
            # in time. Its cleanup is a done callback, which runs even when the task is
            # cancelled before it starts (where a ``finally`` in it would not).
            state.runner = loop.create_task(self._drain(state))
            state.runner.add_done_callback(partial(self._drained, loop, state))
        try:
            return await pending.future
        except asyncio.CancelledError:  # the caller gave up: its item need not run
            self._withdraw(loop, state, key, pending)
            raise

    def _next_batch(self, state: _LoopState[Item, Result]) -> list[_Pending[Item, Result]]:
        """Take the next batch off the queues: the group whose head waited longest."""
        while state.queues:
            key = min(state.queues, key=lambda k: state.queues[k][0].arrival)
            queue = state.queues[key]
            batch = queue[: self.max_batch_size]
            del queue[: self.max_batch_size]
            if not queue:
                del state.queues[key]
            live = [p for p in batch if not p.future.done()]
            if live:
                return live
        return []

    async def _drain(self, state: _LoopState[Item, Result]) -> None:
        """Run batches one at a time until nothing is queued."""
        while batch := self._next_batch(state):
            try:
                await self._run(batch)
            except asyncio.CancelledError:
                # The loop is shutting down: nobody must wait for ever.
                for p in batch:
                    p.future.cancel()
                raise

    def _drained(
        self,
        loop: asyncio.AbstractEventLoop,
        state: _LoopState[Item, Result],
        runner: asyncio.Task[None],
    ) -> None:
        if state.runner is not runner:
            return
        state.runner = None
        if state.queues and runner.cancelled():
            for queue in state.queues.values():
                for p in queue:
                    p.future.cancel()
            state.queues.clear()
        elif state.queues:  # submitted after the last batch was taken, before this ran
            state.runner = loop.create_task(self._drain(state))
            state.runner.add_done_callback(partial(self._drained, loop, state))
        self._forget_if_idle(loop, state)

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
