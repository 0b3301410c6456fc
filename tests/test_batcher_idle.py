"""MicroBatcher without an idle wait: a lone request starts at once, later ones batch up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from vlmguard_plugins.backends._batching import MicroBatcher

# A batch window this long would fail every test below if it were still waited for.
LONG_WINDOW_MS = 10_000


class GatedRunner:
    """A batch runner that records each batch and holds the first one until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.events: list[str] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[str]) -> list[str]:
        with self._lock:
            self.batches.append(list(items))
            self.events.append("start " + ",".join(items))
            first = len(self.batches) == 1
        if first:
            self.first_started.set()
            self.release.wait(5)
        with self._lock:
            self.events.append("end " + ",".join(items))
        return [item.upper() for item in items]


async def _until_started(runner: GatedRunner) -> None:
    assert await asyncio.to_thread(runner.first_started.wait, 5)


async def test_a_lone_request_starts_within_a_few_loop_turns() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(
        lambda items: list(items), max_wait_ms=LONG_WINDOW_MS
    )
    task = asyncio.create_task(batcher.submit("a"))
    for _ in range(5):  # no time passes: only the loop's ready callbacks run
        await asyncio.sleep(0)
    assert batcher.batch_sizes == [1]  # handed to the worker thread, no timer involved
    assert await asyncio.wait_for(task, 5) == "a"


async def test_a_lone_request_completes_promptly_despite_a_long_window() -> None:
    batcher: MicroBatcher[str, str] = MicroBatcher(
        lambda items: [item * 2 for item in items], max_wait_ms=LONG_WINDOW_MS
    )
    for word in ("a", "b", "c"):  # one after another: each finds the batcher idle
        assert await asyncio.wait_for(batcher.submit(word), 5) == word * 2
    assert batcher.batch_sizes == [1, 1, 1]
    assert not batcher._states


async def test_requests_submitted_together_share_the_first_batch() -> None:
    runner = GatedRunner()
    runner.release.set()
    batcher: MicroBatcher[str, str] = MicroBatcher(runner, max_wait_ms=LONG_WINDOW_MS)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(w) for w in ("a", "b", "c"))), 5
    )
    assert results == ["A", "B", "C"]
    assert runner.batches == [["a", "b", "c"]]


async def test_requests_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    runner = GatedRunner()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        runner, max_batch_size=2, max_wait_ms=LONG_WINDOW_MS
    )
    first = asyncio.create_task(batcher.submit("a"))
    await _until_started(runner)
    later = [asyncio.create_task(batcher.submit(w)) for w in ("b", "c", "d")]
    for _ in range(5):
        await asyncio.sleep(0)
    assert runner.batches == [["a"]]  # the others wait for the model, not for a timer
    runner.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, *later), 5) == ["A", "B", "C", "D"]
    assert runner.batches == [["a"], ["b", "c"], ["d"]]
    # One batch at a time, each started only once the previous one ended.
    assert runner.events == ["start a", "end a", "start b,c", "end b,c", "start d", "end d"]
    assert not batcher._states


async def test_the_group_that_waited_longest_goes_next() -> None:
    runner = GatedRunner()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        runner, max_batch_size=4, group_key=lambda item: item[0]
    )
    first = asyncio.create_task(batcher.submit("x0"))
    await _until_started(runner)
    later = []
    for word in ("b1", "a1", "b2", "a2"):
        later.append(asyncio.create_task(batcher.submit(word)))
        await asyncio.sleep(0)
    runner.release.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 5)
    assert runner.batches == [["x0"], ["b1", "b2"], ["a1", "a2"]]


async def test_a_request_withdrawn_while_queued_never_runs() -> None:
    runner = GatedRunner()
    batcher: MicroBatcher[str, str] = MicroBatcher(runner)
    first = asyncio.create_task(batcher.submit("a"))
    await _until_started(runner)
    withdrawn = asyncio.create_task(batcher.submit("b"))
    kept = asyncio.create_task(batcher.submit("c"))
    await asyncio.sleep(0)
    withdrawn.cancel()
    runner.release.set()
    assert await asyncio.wait_for(asyncio.gather(first, kept), 5) == ["A", "C"]
    assert runner.batches == [["a"], ["c"]]
    assert not batcher._states
