"""Gather concurrent requests into batches for a model that is faster batched."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass
class _LoopState(Generic[Item, Result]):
    queues: dict[Hashable, list[_Pending[Item, Result]]] = field(default_factory=dict)
    timers: dict[Hashable, asyncio.TimerHandle] = field(default_factory=dict)


class MicroBatcher(Generic[Item, Result]):
    """Collects items submitted concurrently and runs them as one batch.

    A batch closes when it has ``max_batch_size`` items or ``max_wait_ms`` after its
    first item, whichever is first. Items only share a batch when ``group_key`` gives
    them the same key (for example the same generation settings).  ``run_batch``
    runs in a worker thread, one batch at a time, so the event loop stays free.
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
        self._run_lock: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        state = self._states.setdefault(loop, _LoopState())
        key = self.group_key(item)
        pending = _Pending(item=item, future=loop.create_future())
        queue = state.queues.setdefault(key, [])
        queue.append(pending)
        if len(queue) >= self.max_batch_size:
            self._flush(state, key)
        elif key not in state.timers:
            state.timers[key] = loop.call_later(self.max_wait_ms / 1000.0, self._flush, state, key)
        return await pending.future

    def _flush(self, state: _LoopState[Item, Result], key: Hashable) -> None:
        timer = state.timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = state.queues.pop(key, [])
        if batch:
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[_Pending[Item, Result]]) -> None:
        loop = asyncio.get_running_loop()
        lock = self._run_lock.setdefault(loop, asyncio.Lock())
        async with lock:
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                return
            self.batch_sizes.append(len(live))
            try:
                results = await asyncio.to_thread(self.run_batch, [p.item for p in live])
            except BaseException as exc:  # every waiter must learn of the failure
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
