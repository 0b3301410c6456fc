"""MicroBatcher serves many event loops and keeps none of them alive once finished."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Sequence

import pytest

from vlmguard_plugins.backends._batching import MicroBatcher


def _double(items: Sequence[int]) -> list[int]:
    return [2 * item for item in items]


def _assert_no_loop_kept(
    batcher: MicroBatcher[int, int], loops: list[weakref.ref[asyncio.AbstractEventLoop]]
) -> None:
    gc.collect()
    assert len(batcher._states) == 0
    assert all(ref() is None for ref in loops), "a finished event loop is still alive"


def test_two_hundred_asyncio_runs_keep_no_loop() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(_double, max_batch_size=4, max_wait_ms=1)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main(i: int) -> list[int]:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return list(await asyncio.gather(*(batcher.submit(i + k) for k in range(3))))

    for i in range(200):
        assert asyncio.run(main(i)) == [2 * i, 2 * i + 2, 2 * i + 4]
    assert sum(batcher.batch_sizes) == 600
    _assert_no_loop_kept(batcher, loops)


def test_loops_ended_with_work_pending_are_not_kept() -> None:
    release = threading.Event()

    def slow(items: Sequence[int]) -> list[int]:
        release.wait(5)
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch_size=2, max_wait_ms=60_000)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def cancelled_while_queued() -> None:
        # A batch is running, so the next item queues; its caller gives up first.
        loops.append(weakref.ref(asyncio.get_running_loop()))
        started = len(batcher.batch_sizes)
        running = asyncio.get_running_loop().create_task(batcher.submit(0))
        while len(batcher.batch_sizes) == started:
            await asyncio.sleep(0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit(1), 0.01)
        release.set()
        assert await running == 0

    async def abandoned_while_queued() -> None:
        # asyncio.run cancels the submission queued behind a running batch on the way out.
        loop = asyncio.get_running_loop()
        loops.append(weakref.ref(loop))
        started = len(batcher.batch_sizes)
        loop.create_task(batcher.submit(0))
        while len(batcher.batch_sizes) == started:
            await asyncio.sleep(0)
        loop.create_task(batcher.submit(1))
        await asyncio.sleep(0)
        loop.call_later(0.05, release.set)

    async def abandoned_while_running() -> None:
        # A full batch is running in its thread when asyncio.run cancels everything.
        loops.append(weakref.ref(asyncio.get_running_loop()))
        for item in (1, 2, 3):
            asyncio.get_running_loop().create_task(batcher.submit(item))
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.05, release.set)

    for main in (cancelled_while_queued, abandoned_while_queued, abandoned_while_running) * 3:
        release.clear()
        asyncio.run(main())
    _assert_no_loop_kept(batcher, loops)


def test_concurrent_items_share_a_batch_per_group() -> None:
    seen: list[list[str]] = []

    def run(items: Sequence[str]) -> list[str]:
        seen.append(list(items))
        return [item.upper() for item in items]

    batcher: MicroBatcher[str, str] = MicroBatcher(
        run, max_batch_size=3, max_wait_ms=20, group_key=lambda item: item[0]
    )

    async def main() -> list[str]:
        words = ["a1", "b1", "a2", "a3", "a4", "b2"]
        return list(await asyncio.gather(*(batcher.submit(word) for word in words)))

    assert asyncio.run(main()) == ["A1", "B1", "A2", "A3", "A4", "B2"]
    assert sorted(map(sorted, seen)) == [["a1", "a2", "a3"], ["a4"], ["b1", "b2"]]
    assert len(batcher._states) == 0


def test_batches_of_one_loop_run_one_at_a_time() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def run(items: Sequence[int]) -> list[int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=1, max_wait_ms=0)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    assert most == 1 and batcher.batch_sizes == [1] * 5


def test_a_failing_batch_fails_every_waiter_and_the_next_batch_still_runs() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if 0 in items:
            raise ValueError("boom")
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=2, max_wait_ms=5)

    async def main() -> list[object]:
        return list(
            await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        )

    results = asyncio.run(main())
    assert [type(r) for r in results[:2]] == [ValueError, ValueError]
    assert results[2:] == [2, 3]


def test_a_wrong_number_of_results_is_an_error_not_a_hang() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: [1], max_batch_size=2)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="2 items"):
            await asyncio.wait_for(asyncio.gather(batcher.submit(1), batcher.submit(2)), 5)

    asyncio.run(main())


def test_a_runner_cancelled_before_its_first_step_leaves_nothing_behind() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(_double)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        submission = loop.create_task(batcher.submit(1))
        await asyncio.sleep(0)  # the submission queued its item and created the runner
        runner = batcher._states[loop].runner
        assert runner is not None and not runner.done()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await submission  # its waiter learns of it instead of waiting for ever
        assert len(batcher._states) == 0

    asyncio.run(main())
    assert batcher.batch_sizes == []
