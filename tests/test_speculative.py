"""Speculative mode: the original answer is held until the verdict, released or replaced."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, cast

import pytest
from PIL import Image

from vlmguard_plugins import (
    GuardedConversation,
    Rewriter,
    SpeculationStats,
    releasable,
    speculate,
    speculate_once,
)
from vlmguard_plugins.backends.base import Backend, Generation, GenerationRequest
from vlmguard_plugins.conversation import Conversation, ImagePart, OtherPart, TextPart, Turn
from vlmguard_plugins.errors import (
    ConfigurationError,
    ImageInputError,
    UnsupportedContentError,
)
from vlmguard_plugins.images import ImageLimits
from vlmguard_plugins.speculative import speculate_once_sync, speculate_sync
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "How do I use this?"
REWRITE = "Describe how to handle this tool safely."


def conversation(*extra: Any) -> Conversation:
    return Conversation((Turn("user", (TextPart(QUESTION), *extra)),))


def benign() -> Rewriter:
    return Rewriter(ScriptedBackend())  # echoes the text unchanged, risk none


def risky(risk: str = "medium") -> Rewriter:
    return Rewriter(ScriptedBackend.rewriting_to(REWRITE, risk=risk))


def user_text(guarded: GuardedConversation) -> str:
    return "".join(p.text for p in guarded.conversation.turns[-1].parts if isinstance(p, TextPart))


class Upstream:
    """A model's stream that records what happened to it: what it yielded, whether it closed."""

    def __init__(self, chunks: list[str], *, hang_after: int | None = None) -> None:
        self.chunks = chunks
        self.hang_after = hang_after
        self.yielded: list[str] = []
        self.requested = 0
        self.closed = False
        self.cancelled = False
        self.first = asyncio.Event()
        self.finished = asyncio.Event()

    async def stream(self) -> AsyncIterator[str]:
        try:
            for index, chunk in enumerate(self.chunks):
                if index == self.hang_after:
                    await asyncio.Event().wait()  # a long generation still under way
                self.requested += 1
                self.yielded.append(chunk)
                self.first.set()
                yield chunk
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed = True
            self.finished.set()


class HeldBackend:
    """A rewriter backend that answers only once the test releases it (from any thread)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.release = threading.Event()
        self.called = threading.Event()

    async def agenerate(self, request: GenerationRequest) -> Generation:
        self.called.set()
        while not self.release.is_set():
            await asyncio.sleep(0.002)
        return await self.backend.agenerate(request)

    async def aclose(self) -> None:
        await self.backend.aclose()


class Gate:
    """A guard whose rewriter model gives its verdict only when the test opens the gate.

    The input checks run at once; only the model call waits, as a slow rewriter would.
    """

    def __init__(self, rewriter: Rewriter, conv: Conversation) -> None:
        self.held = HeldBackend(rewriter.backend)
        rewriter.backend = self.held
        self.open = self.held.release
        self.rewriter = rewriter
        self.conv = conv

    async def verdict(self) -> GuardedConversation:
        return await self.rewriter.aguard(self.conv)


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in stream]


def guarded_stream(calls: list[str]) -> Any:
    async def stream(guarded: GuardedConversation) -> AsyncIterator[str]:
        calls.append(user_text(guarded))
        for chunk in ("Handle ", "it ", "safely."):
            yield chunk

    return stream


def no_tasks_left() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


# -- releasable -----------------------------------------------------------------------


async def test_only_an_unchanged_low_risk_verdict_is_releasable() -> None:
    assert releasable(await benign().aguard(conversation()))
    assert releasable(await risky("low").aguard(conversation())) is False  # rewritten
    assert releasable(await risky().aguard(conversation())) is False
    failed = Rewriter(ScriptedBackend([RuntimeError("down")]), on_error="passthrough")
    passthrough = await failed.aguard(conversation())
    assert user_text(passthrough) == QUESTION
    assert releasable(passthrough) is False  # a failure is not a verdict
    dropping = Rewriter(ScriptedBackend(), unsupported_content="drop")
    assert releasable(await dropping.aguard(conversation(OtherPart("audio")))) is False


# -- streaming ------------------------------------------------------------------------


async def test_a_benign_verdict_releases_the_held_answer_in_order_only_after_the_verdict() -> None:
    upstream = Upstream(["The ", "tool ", "cuts."])
    gate = Gate(benign(), conversation())
    received: list[str] = []
    calls: list[str] = []

    async def consume() -> None:
        async for chunk in speculate(gate.verdict(), upstream.stream, guarded_stream(calls)):
            received.append(chunk)

    consumer = asyncio.create_task(consume())
    await upstream.finished.wait()  # the whole original answer exists, the verdict does not
    assert upstream.yielded == ["The ", "tool ", "cuts."]
    assert received == []
    gate.open.set()
    await consumer
    assert received == ["The ", "tool ", "cuts."]
    assert calls == []


async def test_after_a_hit_the_rest_of_the_answer_streams_live() -> None:
    release = asyncio.Event()
    gate = Gate(benign(), conversation())

    async def original() -> AsyncIterator[str]:
        yield "held"
        await release.wait()
        yield "live"

    stream = speculate(gate.verdict(), original, guarded_stream([]))
    first = asyncio.ensure_future(stream.__anext__())
    gate.open.set()
    assert await first == "held"
    release.set()
    assert await stream.__anext__() == "live"
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_a_risky_verdict_cancels_the_original_and_streams_the_guarded_answer() -> None:
    upstream = Upstream(["Step one: ", "sharpen"], hang_after=1)
    gate = Gate(risky(), conversation())
    stats = SpeculationStats()
    calls: list[str] = []
    consumer = asyncio.ensure_future(
        collect(speculate(gate.verdict(), upstream.stream, guarded_stream(calls), stats))
    )
    await upstream.first.wait()  # the original call is generating
    gate.open.set()
    received = await consumer
    assert received == ["Handle ", "it ", "safely."]
    assert calls == [REWRITE]
    assert upstream.closed and upstream.cancelled
    assert stats == SpeculationStats(hits=0, misses=1, wasted_calls=1)
    assert no_tasks_left()


async def test_a_risky_verdict_closes_an_original_stream_that_is_waiting_to_be_read() -> None:
    upstream = Upstream([f"chunk {i} " for i in range(10)])
    gate = Gate(risky(), conversation())
    stream = speculate(gate.verdict(), upstream.stream, guarded_stream([]), max_held_chunks=2)
    consumer = asyncio.ensure_future(collect(stream))
    for _ in range(50):  # let the reader run until it waits for room
        await asyncio.sleep(0)
    gate.open.set()
    assert await consumer == ["Handle ", "it ", "safely."]
    assert upstream.closed and upstream.yielded == ["chunk 0 ", "chunk 1 "]


async def test_a_block_raises_and_nothing_of_the_original_is_released() -> None:
    class Refused(Exception):
        pass

    blocking = Rewriter(ScriptedBackend([RuntimeError("rewriter down")]), on_error="block")
    upstream = Upstream(["The ", "tool"], hang_after=1)
    gate = Gate(blocking, conversation())
    received: list[str] = []

    async def refuse(guarded: GuardedConversation) -> AsyncIterator[str]:
        assert guarded.result is not None and guarded.result.blocked
        raise Refused("blocked by the guard")
        yield ""  # pragma: no cover (makes this a generator)

    async def consume() -> None:
        async for chunk in speculate(gate.verdict(), upstream.stream, refuse):
            received.append(chunk)

    consumer = asyncio.ensure_future(consume())
    await upstream.first.wait()
    gate.open.set()
    with pytest.raises(Refused):
        await consumer
    assert received == []
    assert upstream.closed
    assert no_tasks_left()


def truncated_png() -> str:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(buffer, "PNG")
    data = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a valid header, half the pixels
    return "data:image/png;base64," + base64.b64encode(data).decode()


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    return buffer.getvalue()


REFUSED = {
    "truncated image": (lambda: ImagePart(truncated_png()), {}, ImageInputError),
    "image over the pixel limit": (
        lambda: ImagePart(small_png()),
        {"image_limits": ImageLimits(max_pixels=1000)},
        ImageInputError,
    ),
    "link-local URL": (
        lambda: ImagePart("http://169.254.169.254/latest/meta-data/iam/x.png"),
        {},
        ImageInputError,
    ),
    "unsupported part": (lambda: OtherPart("input_audio"), {}, UnsupportedContentError),
}
"""Input that enforce mode refuses: the part, the rewriter's settings, the error raised."""


class Recorder:
    """The model: records every call on the original request."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.calls = 0

    async def stream(self) -> AsyncIterator[str]:
        self.calls += 1
        self.called.set()
        yield "UNSAFE"

    async def once(self) -> str:
        self.calls += 1
        self.called.set()
        return "UNSAFE"


async def slow_checks(guard: Any, model: Recorder) -> GuardedConversation:
    """The guard, its checks starting only once the model was called (or after 0.3 s).

    A speculative call that did not wait for the checks would certainly reach the model
    first.
    """
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(model.called.wait(), 0.3)
    return cast(GuardedConversation, await guard)


@pytest.mark.parametrize("case", list(REFUSED))
async def test_input_the_guard_refuses_never_reaches_the_model(case: str) -> None:
    part, settings, error = REFUSED[case]
    rewriter = Rewriter(ScriptedBackend(), **settings)  # type: ignore[arg-type]
    stats = SpeculationStats()
    streamed, once = Recorder(), Recorder()

    with pytest.raises(error):
        await collect(
            speculate(
                slow_checks(rewriter.aguard(conversation(part())), streamed),
                streamed.stream,
                guarded_stream([]),
                stats,
            )
        )
    with pytest.raises(error):
        await speculate_once(
            slow_checks(rewriter.aguard(conversation(part())), once), once.once, _unused, stats
        )
    assert streamed.calls == 0 and once.calls == 0
    assert stats == SpeculationStats()  # no call was made, so none was wasted
    assert no_tasks_left()


@pytest.mark.parametrize("case", list(REFUSED))
def test_input_the_guard_refuses_never_reaches_a_synchronous_model(case: str) -> None:
    part, settings, error = REFUSED[case]
    rewriter = Rewriter(ScriptedBackend(), **settings)  # type: ignore[arg-type]
    calls: list[str] = []
    called = threading.Event()

    def guard() -> GuardedConversation:
        called.wait(0.3)  # a call that did not wait for the checks comes first
        return rewriter.guard(conversation(part()))

    def original() -> Iterator[str]:
        calls.append("stream")
        called.set()
        yield "UNSAFE"

    def original_once() -> str:
        calls.append("once")
        called.set()
        return "UNSAFE"

    with pytest.raises(error):
        list(speculate_sync(guard, original, lambda g: iter(["unused"])))
    with pytest.raises(error):
        speculate_once_sync(guard, original_once, lambda g: "unused")
    assert calls == []


async def _unused(guarded: GuardedConversation) -> str:
    raise AssertionError("no guarded call for refused input")


async def test_the_original_starts_once_the_checks_pass_while_the_rewriter_model_runs() -> None:
    upstream = Upstream(["The ", "tool"], hang_after=1)
    gate = Gate(risky(), conversation(ImagePart(small_png())))
    stats = SpeculationStats()
    consumer = asyncio.ensure_future(
        collect(speculate(gate.verdict(), upstream.stream, guarded_stream([]), stats))
    )
    await upstream.first.wait()  # the image is checked: the original overlaps the model call
    assert gate.held.called.is_set()
    gate.open.set()
    assert await consumer == ["Handle ", "it ", "safely."]
    assert upstream.closed and upstream.cancelled
    assert stats == SpeculationStats(misses=1, wasted_calls=1)


async def test_dropped_parts_are_never_sent_in_the_original() -> None:
    dropping = Rewriter(ScriptedBackend(), unsupported_content="drop")
    gate = Gate(dropping, conversation(OtherPart("input_audio")))
    model = Recorder()
    calls: list[str] = []
    consumer = asyncio.ensure_future(
        collect(speculate(slow_checks(gate.verdict(), model), model.stream, guarded_stream(calls)))
    )
    while not gate.held.called.is_set():
        await asyncio.sleep(0.01)
    gate.open.set()
    assert await consumer == ["Handle ", "it ", "safely."]
    assert model.calls == 0 and calls == [QUESTION]


async def test_a_cancellation_the_original_swallows_is_delivered_again() -> None:
    closed = asyncio.Event()
    reading = asyncio.Event()
    swallowed: list[bool] = []

    async def stubborn() -> AsyncIterator[str]:
        # Like a client library that catches a cancellation at an unlucky moment and
        # reads on: without a second delivery the upstream would generate for nobody.
        try:
            yield "UNSAFE "
            try:
                reading.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed.append(True)
            await asyncio.Event().wait()
            yield "never"
        finally:
            closed.set()

    gate = Gate(risky(), conversation())
    consumer = asyncio.ensure_future(
        collect(speculate(gate.verdict(), stubborn, guarded_stream([])))
    )
    await reading.wait()
    gate.open.set()
    assert await consumer == ["Handle ", "it ", "safely."]
    assert swallowed == [True] and closed.is_set()
    assert no_tasks_left()


async def test_an_error_of_a_cancelled_original_does_not_leak() -> None:
    lost: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: lost.append(context))

    async def failing() -> AsyncIterator[str]:
        raise ConnectionError("upstream reset")
        yield ""  # pragma: no cover

    received = await collect(speculate(risky().aguard(conversation()), failing, guarded_stream([])))
    assert received == ["Handle ", "it ", "safely."]
    assert lost == []


async def test_an_error_of_a_released_original_reaches_the_caller() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "The "
        raise ConnectionError("upstream reset")

    received: list[str] = []
    with pytest.raises(ConnectionError, match="upstream reset"):
        async for chunk in speculate(benign().aguard(conversation()), failing, guarded_stream([])):
            received.append(chunk)
    assert received == ["The "]


async def test_a_caller_that_stops_reading_closes_the_original_and_the_guard() -> None:
    upstream = Upstream(["a", "b", "c"], hang_after=2)
    gate = Gate(benign(), conversation())
    # speculate is an async generator: a caller that stops early closes it.
    stream = cast(
        AsyncGenerator[str, None], speculate(gate.verdict(), upstream.stream, guarded_stream([]))
    )
    gate.open.set()
    assert await stream.__anext__() == "a"
    await stream.aclose()
    assert upstream.closed
    assert no_tasks_left()


async def test_stats_count_hits_misses_and_wasted_calls() -> None:
    stats = SpeculationStats()
    for rewriter in (benign(), benign(), risky()):
        upstream = Upstream(["x"])
        gate = Gate(rewriter, conversation())
        consumer = asyncio.ensure_future(
            collect(speculate(gate.verdict(), upstream.stream, guarded_stream([]), stats))
        )
        await upstream.finished.wait()
        gate.open.set()
        await consumer
    assert stats == SpeculationStats(hits=2, misses=1, wasted_calls=1)


async def test_a_verdict_before_the_checks_are_reported_calls_the_model_once() -> None:
    # A guard that never runs the rewriter (nothing to rewrite) gives no overlap.
    empty = Conversation((Turn("system", (TextPart("Be brief."),)),))
    upstream = Upstream(["ok"])
    stats = SpeculationStats()
    received = await collect(
        speculate(benign().aguard(empty), upstream.stream, guarded_stream([]), stats)
    )
    assert received == ["ok"] and stats == SpeculationStats(hits=1)


async def test_max_held_chunks_stops_reading_the_original_until_the_verdict() -> None:
    upstream = Upstream([f"{i} " for i in range(10)])
    gate = Gate(benign(), conversation())
    consumer = asyncio.ensure_future(
        collect(speculate(gate.verdict(), upstream.stream, guarded_stream([]), max_held_chunks=3))
    )
    for _ in range(50):  # ample turns of the loop for an unbounded reader to read all ten
        await asyncio.sleep(0)
    assert upstream.requested == 3
    gate.open.set()
    assert await consumer == [f"{i} " for i in range(10)]


async def test_without_a_bound_the_whole_answer_is_held() -> None:
    upstream = Upstream([f"{i} " for i in range(10)])
    gate = Gate(benign(), conversation())
    consumer = asyncio.ensure_future(
        collect(speculate(gate.verdict(), upstream.stream, guarded_stream([])))
    )
    await upstream.finished.wait()
    assert upstream.requested == 10
    gate.open.set()
    assert len(await consumer) == 10


async def test_max_held_chunks_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_held_chunks"):
        await collect(
            speculate(
                benign().aguard(conversation()),
                Upstream([]).stream,
                guarded_stream([]),
                max_held_chunks=0,
            )
        )


# -- one answer -----------------------------------------------------------------------


def answers(log: list[str], started: asyncio.Event) -> tuple[Any, Any]:
    cancelled: list[bool] = []

    async def original() -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # answered only when the test says so
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    async def guarded(guarded: GuardedConversation) -> str:
        log.append(user_text(guarded))
        return "Handle it safely."

    return (original, guarded), cancelled


async def test_speculate_once_releases_the_original_answer_on_a_benign_verdict() -> None:
    gate = Gate(benign(), conversation())
    answered = asyncio.Event()
    calls: list[str] = []

    async def original() -> str:
        answered.set()
        return "The tool cuts."

    async def guarded(guarded: GuardedConversation) -> str:
        calls.append(user_text(guarded))
        return "unused"

    stats = SpeculationStats()
    result = asyncio.ensure_future(speculate_once(gate.verdict(), original, guarded, stats))
    await answered.wait()
    await asyncio.sleep(0)
    assert not result.done()  # answered, but held until the verdict
    gate.open.set()
    assert await result == "The tool cuts."
    assert calls == []
    assert stats == SpeculationStats(hits=1)


async def test_speculate_once_cancels_the_original_on_a_risky_verdict() -> None:
    calls: list[str] = []
    started = asyncio.Event()
    (original, guarded), cancelled = answers(calls, started)
    gate = Gate(risky(), conversation())
    stats = SpeculationStats()
    result = asyncio.ensure_future(speculate_once(gate.verdict(), original, guarded, stats))
    await started.wait()  # the verdict comes while the original call is in flight
    gate.open.set()
    assert await result == "Handle it safely."
    assert calls == [REWRITE]
    assert cancelled == [True]
    assert stats == SpeculationStats(misses=1, wasted_calls=1)
    assert no_tasks_left()


async def test_speculate_once_raises_a_guard_input_error_without_calling_the_original() -> None:
    calls: list[str] = []
    started = asyncio.Event()
    (original, guarded), cancelled = answers(calls, started)
    guard = benign().aguard(conversation(OtherPart("video")))
    with pytest.raises(UnsupportedContentError):
        await speculate_once(guard, original, guarded)
    assert not started.is_set() and cancelled == []
    assert calls == []
    assert no_tasks_left()


# -- synchronous callers ----------------------------------------------------------------


class BlockingUpstream:
    """A synchronous model stream: it records what it yielded and whether it was closed."""

    def __init__(self, chunks: list[str], *, hang_after: int | None = None) -> None:
        self.chunks = chunks
        self.hang_after = hang_after
        self.yielded: list[str] = []
        self.closed = threading.Event()
        self.finished = threading.Event()
        self.resume = threading.Event()

    def stream(self) -> Iterator[str]:
        try:
            for index, chunk in enumerate(self.chunks):
                if index == self.hang_after:
                    self.resume.wait(10)
                self.yielded.append(chunk)
                yield chunk
            self.finished.set()
        finally:
            self.closed.set()


def test_speculate_sync_holds_the_answer_until_a_benign_verdict() -> None:
    upstream = BlockingUpstream(["The ", "tool ", "cuts."])
    rewriter = benign()
    held = HeldBackend(rewriter.backend)
    rewriter.backend = held

    def release_when_answered() -> None:
        upstream.finished.wait(10)  # the whole answer exists before the verdict
        held.release.set()

    threading.Thread(target=release_when_answered, daemon=True).start()
    stats = SpeculationStats()
    received = list(
        speculate_sync(
            lambda: rewriter.guard(conversation()),
            upstream.stream,
            lambda g: iter(["unused"]),
            stats,
        )
    )
    assert received == ["The ", "tool ", "cuts."]
    assert stats == SpeculationStats(hits=1)


def test_speculate_sync_closes_the_original_stream_on_a_miss() -> None:
    upstream = BlockingUpstream(["UNSAFE ", "more"], hang_after=1)
    rewriter = risky()
    calls: list[str] = []

    def guarded(outcome: GuardedConversation) -> Iterator[str]:
        calls.append(user_text(outcome))
        upstream.resume.set()  # the original's next chunk comes: it sees the stop there
        yield "Handle it safely."

    received = list(
        speculate_sync(lambda: rewriter.guard(conversation()), upstream.stream, guarded)
    )
    assert received == ["Handle it safely."]
    assert calls == [REWRITE]
    assert upstream.closed.wait(10)
    assert not upstream.finished.is_set()  # closed at its next chunk, not read to the end


def test_speculate_once_sync_answers_the_rewrite_on_a_miss_and_raises_input_errors() -> None:
    calls: list[str] = []

    def guarded(outcome: GuardedConversation) -> str:
        calls.append(user_text(outcome))
        return "Handle it safely."

    stats = SpeculationStats()
    rewriter = risky()
    answer = speculate_once_sync(
        lambda: rewriter.guard(conversation()), lambda: "UNSAFE", guarded, stats
    )
    assert answer == "Handle it safely." and calls == [REWRITE]
    assert (
        speculate_once_sync(lambda: benign().guard(conversation()), lambda: "ok", guarded) == "ok"
    )
    with pytest.raises(UnsupportedContentError):
        speculate_once_sync(
            lambda: benign().guard(conversation(OtherPart("audio"))), lambda: "x", guarded, stats
        )
    assert stats == SpeculationStats(misses=1, wasted_calls=1)  # refused input: no call
