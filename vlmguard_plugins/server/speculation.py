"""Speculative mode in the gateway: the upstream answers while the rewriter model runs.

Once the guard has checked the input, the original request goes upstream while the
rewriter model runs (:func:`vlmguard_plugins.speculative.speculate`).  Its answer (a
whole body, or every event of a stream) is held until the verdict:

- the guard leaves the request exactly as it is (risk none or low, nothing rewritten,
  nothing dropped): the held answer is released, then the rest of the stream live;
- otherwise the original call is cancelled (its HTTP stream closed, so the upstream
  stops generating) and the guarded request is sent and relayed instead;
- input the guard cannot check: the client gets the usual 400, and nothing went
  upstream: the original request is sent only once the guard has checked the input
  (every part covered, every image loaded and decoded within the limits, every URL
  allowed), while the rewriter model runs.

A client that leaves before the verdict cancels the original call, and the guarded
request is not sent for nobody.

The response's status and headers are sent only once the verdict is in and the
winning answer has begun, so an upstream or guard error is still a plain HTTP error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from ..conversation import GuardedConversation, to_openai
from ..speculative import SpeculationStats, speculate, speculate_once
from .errors import GatewayError
from .guard import Guard, RequestContext, guard_report
from .metrics import GatewayMetrics
from .relay import (
    STREAM_HEADERS,
    UpstreamStream,
    WholeAnswer,
    fetch_whole,
    report_event,
    report_headers,
    whole_response,
)
from .upstream import Upstream

T = TypeVar("T")


class SpeculativeRelay:
    """Answers chat requests speculatively (see the module).

    Args:
        guard: the gateway's guard (its metrics and audit log record every verdict).
        upstream: where requests go.
        metrics: the gateway's metrics.
        stats: speculation counters (hits, misses, wasted upstream calls).
        max_held_chunks: stream reads held before the verdict at most (backpressure).
        expose_analysis: add the guard's report to responses.
    """

    def __init__(
        self,
        guard: Guard,
        upstream: Upstream,
        metrics: GatewayMetrics,
        stats: SpeculationStats,
        *,
        max_held_chunks: int,
        expose_analysis: bool,
    ) -> None:
        self.guard = guard
        self.upstream = upstream
        self.metrics = metrics
        self.stats = stats
        self.max_held_chunks = max_held_chunks
        self.expose_analysis = expose_analysis

    async def respond(
        self,
        body: dict[str, Any],
        context: RequestContext,
        *,
        stream: bool,
        model: str,
        headers: dict[str, str],
        receive: Receive | None = None,
    ) -> Response:
        """The response to the chat request ``body``.

        ``receive`` is the request's ASGI channel, read (once the body is in) to see the
        client leave before a non-streamed answer is ready.

        Raises:
            GatewayError: the guard refused the input (400) or failed under the raise
                policy (503), or the upstream failed on the answer that was chosen;
                499 when the client left before the answer.
        """
        verdict: list[GuardedConversation] = []

        async def run_guard() -> GuardedConversation:
            guarded = await self.guard.guard(body["messages"], context)
            verdict.append(guarded)
            return guarded

        def guarded_body(guarded: GuardedConversation) -> dict[str, Any]:
            # Every other field goes on as the client sent it, as in enforce mode.
            return {**body, "messages": to_openai(guarded.conversation)}

        if not stream:
            answering = speculate_once(
                run_guard(),
                lambda: fetch_whole(self.upstream, self.metrics, body),
                lambda guarded: fetch_whole(self.upstream, self.metrics, guarded_body(guarded)),
                self.stats,
            )
            answer: WholeAnswer = await _unless_disconnected(answering, receive)
            return whole_response(self.metrics, answer, self._report(verdict), headers)

        streams: list[UpstreamStream] = []

        def open_stream(request_body: dict[str, Any]) -> AsyncIterator[bytes]:
            opened = UpstreamStream(self.upstream, self.metrics, request_body)
            streams.append(opened)
            return opened.chunks()

        chunks = speculate(
            run_guard(),
            lambda: open_stream(body),
            lambda guarded: open_stream(guarded_body(guarded)),
            self.stats,
            self.max_held_chunks,
        )
        # Wait for the verdict and the first bytes of the answer it chose: an error
        # before them is still an ordinary HTTP error, not a broken stream.
        first = await _unless_disconnected(_first(chunks), receive)
        report = self._report(verdict)

        async def close() -> None:
            # (speculate returns an async generator; its annotation is the wider
            # AsyncIterator, hence getattr.)  Closing it cancels every upstream call of
            # this request; closing it twice is harmless.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

        async def relay() -> AsyncIterator[bytes]:
            try:
                if report is not None:
                    yield report_event(model, report)
                if first is not None:
                    yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await close()

        return StreamingResponse(
            relay(),
            media_type=streams[-1].media_type if streams else "text/event-stream",
            headers={**STREAM_HEADERS, **report_headers(report), **headers},
            # Also when the client left before the relay began, so relay() never ran.
            background=BackgroundTask(close),
        )

    def _report(self, verdict: list[GuardedConversation]) -> dict[str, Any] | None:
        if not self.expose_analysis or not verdict or verdict[0].result is None:
            return None
        return guard_report(verdict[0])


async def _first(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None


async def _unless_disconnected(answering: Awaitable[T], receive: Receive | None) -> T:
    """``answering``'s answer, cancelled (every upstream call with it) if the client leaves.

    Raises:
        GatewayError: 499, the client closed the connection first.
    """
    if receive is None:
        return await answering
    answer = asyncio.ensure_future(answering)
    leaving = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((answer, leaving), return_when=asyncio.FIRST_COMPLETED)
        if not answer.done() and leaving.exception() is not None:
            await asyncio.wait((answer,))  # the channel cannot be watched: just answer
    finally:
        for task in (leaving, answer):
            if not task.done():
                task.cancel()
                # Waited for: speculation's own cleanup (closing upstream calls) finishes.
                await asyncio.wait((task,))
    if not answer.cancelled():
        return answer.result()
    raise GatewayError(
        499, "the client closed the request before the answer", code="client_closed_request"
    )


async def _disconnect(receive: Receive) -> None:
    # The body has been read: the next message is the client leaving.
    while (await receive())["type"] != "http.disconnect":
        pass


__all__ = ["SpeculativeRelay"]
