"""Relaying the upstream's answer to the client: whole, or streamed event by event.

A streamed answer is relayed as the raw bytes arrive, never re-assembled; a stream the
upstream breaks off after it has started ends with an OpenAI-style error event (the
status line is already sent).  With ``expose_analysis`` the guard's report is added to
a whole answer under ``vlmguard``, and to a stream as one extra first event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.responses import Response, StreamingResponse

from .errors import GatewayError
from .metrics import GatewayMetrics
from .upstream import Upstream, json_bytes

logger = logging.getLogger("vlmguard_plugins.server")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers of every relayed stream: no caching, no buffering by a proxy in front."""


@dataclass(frozen=True)
class WholeAnswer:
    """A non-streamed upstream answer, read in full."""

    status_code: int
    content: bytes
    media_type: str


def broken_upstream(metrics: GatewayMetrics, exc: httpx.HTTPError) -> GatewayError:
    """The 502 for an upstream that broke off its answer (counted as a ``stream`` error)."""
    metrics.upstream_errors.labels(kind="stream").inc()
    logger.warning("the upstream broke off its answer: %r", exc)
    return GatewayError(
        502,
        f"the upstream broke off its answer: {type(exc).__name__}",
        type="upstream_error",
        code="upstream_unavailable",
    )


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json_bytes(payload) + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    """The event that ends a stream broken off mid-answer, as OpenAI's API sends it."""
    return sse({"error": {"message": error.message, "type": error.type, "code": error.code}})


def report_event(model: str, report: dict[str, Any]) -> bytes:
    """The extra first event of a stream that carries the guard's report."""
    return sse(
        {
            "id": "vlmguard",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "vlmguard": report,
        }
    )


def report_headers(report: dict[str, Any] | None) -> dict[str, str]:
    """The ``X-VLMGuard-*`` headers of a response that carries the guard's report."""
    if report is None:
        return {}
    return {"X-VLMGuard-Risk": report["risk"], "X-VLMGuard-Action": report["action"]}


async def fetch_whole(
    upstream: Upstream, metrics: GatewayMetrics, body: dict[str, Any]
) -> WholeAnswer:
    """Send ``body`` upstream and read the whole answer.

    Cancelled while in flight, the request's connection is closed, so the upstream
    stops working on it.

    Raises:
        GatewayError: the upstream failed or broke off its answer.
    """
    response = await upstream.open("POST", "chat/completions", body)
    try:
        content = await response.aread()
    except httpx.HTTPError as exc:
        raise broken_upstream(metrics, exc) from exc
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
    media_type = response.headers.get("content-type", "application/json")
    return WholeAnswer(response.status_code, content, media_type)


def whole_response(
    metrics: GatewayMetrics,
    answer: WholeAnswer,
    report: dict[str, Any] | None,
    headers: dict[str, str],
) -> Response:
    """The client's response for a whole ``answer``, with the guard's ``report`` if any.

    Raises:
        GatewayError: a report is to be added and the answer is not JSON.
    """
    content = answer.content
    if report is not None:
        try:
            payload = json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise broken_upstream(metrics, httpx.DecodingError(str(exc))) from exc
        if isinstance(payload, dict):
            payload["vlmguard"] = report
            content = json_bytes(payload)
    return Response(
        content,
        status_code=answer.status_code,
        media_type=answer.media_type,
        headers={**report_headers(report), **headers},
    )


async def relay_stream(
    upstream: Upstream,
    metrics: GatewayMetrics,
    body: dict[str, Any],
    model: str,
    report: dict[str, Any] | None,
    headers: dict[str, str],
) -> StreamingResponse:
    """Open the upstream stream for ``body`` and relay it to the client as it arrives.

    Raises:
        GatewayError: the upstream could not be reached or refused the request.
    """
    response = await upstream.open("POST", "chat/completions", body, stream=True)

    async def relay() -> AsyncIterator[bytes]:
        try:
            if report is not None:
                yield report_event(model, report)
            # Raw bytes as they arrive: the events are relayed, never re-assembled.
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            # Mid-stream the status is sent; an error event is how OpenAI signals it.
            yield error_event(broken_upstream(metrics, exc))
        finally:
            # Also when the client went away: give the upstream connection back.
            with anyio.CancelScope(shield=True):
                await response.aclose()

    return StreamingResponse(
        relay(),
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "text/event-stream"),
        headers={**STREAM_HEADERS, **report_headers(report), **headers},
    )


class UpstreamStream:
    """The upstream's streamed answer to one body, opened when first iterated.

    Yields the raw bytes as they arrive (a break-off mid-answer ends with an error
    event).  Closing the iterator, or cancelling the task reading it, closes the HTTP
    stream, so the upstream stops generating.  ``media_type`` is the upstream's once
    the stream has opened.
    """

    def __init__(self, upstream: Upstream, metrics: GatewayMetrics, body: dict[str, Any]) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.body = body
        self.media_type = "text/event-stream"

    async def chunks(self) -> AsyncIterator[bytes]:
        """The answer's raw bytes (see the class).

        Raises:
            GatewayError: the upstream could not be reached or refused the request.
        """
        response = await self.upstream.open("POST", "chat/completions", self.body, stream=True)
        self.media_type = response.headers.get("content-type", self.media_type)
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            yield error_event(broken_upstream(self.metrics, exc))
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


__all__ = [
    "STREAM_HEADERS",
    "UpstreamStream",
    "WholeAnswer",
    "broken_upstream",
    "error_event",
    "fetch_whole",
    "relay_stream",
    "report_event",
    "report_headers",
    "sse",
    "whole_response",
]
