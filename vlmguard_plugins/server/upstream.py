"""The connection to the upstream VLM server (httpx, streamed, pooled).

Requests are sent with the gateway's own upstream key; nothing of the client's
headers is forwarded, so neither a client key leaks upstream nor the upstream key
to a client.  Failures become :class:`GatewayError` with the status a client
expects: 502 when the upstream is down or fails, 504 when it is too slow, and the
upstream's own status for the client's mistakes (400, 404, 422, 429).

The connections are spread over several ``httpx.AsyncClient`` pools, taken in turn:
httpcore looks at every connection of a pool each time a request starts and ends, so
with hundreds of streams in flight one large pool costs more CPU than the relaying.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from typing import Any

import httpx

from .errors import GatewayError, invalid_request, upstream_timeout, upstream_unavailable
from .metrics import GatewayMetrics

logger = logging.getLogger("vlmguard_plugins.server")

KEEPALIVE_EXPIRY_S = 2.0


class Upstream:
    """An OpenAI-compatible server the gateway forwards to.

    Args:
        base_url: the server's API root, e.g. ``http://localhost:8000/v1``.
        api_key: sent as ``Authorization: Bearer``; None sends no key.
        timeout_s: longest wait between two bytes of the answer.
        connect_timeout_s: longest wait to connect (and for a free pooled connection).
        max_connections: connections kept open to the upstream at most (all pools together).
        metrics: where upstream latency and errors are counted.
        transport: an httpx transport (tests may pass one; normally None), shared by
            every pool.
        clients: how many connection pools to spread the connections over; each
            request takes the next one in turn.  Never more than ``max_connections``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        metrics: GatewayMetrics,
        transport: httpx.AsyncBaseTransport | None = None,
        clients: int = 1,
    ) -> None:
        if clients < 1 or max_connections < 1:
            raise ValueError("clients and max_connections must be at least 1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.metrics = metrics
        count = min(clients, max_connections)
        # Rounded up: together the pools may hold up to count - 1 connections more
        # than max_connections, never fewer.
        per_client = math.ceil(max_connections / count)
        self.clients: tuple[httpx.AsyncClient, ...] = tuple(
            httpx.AsyncClient(
                base_url=base_url.rstrip("/") + "/",
                headers=headers,
                timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
                limits=httpx.Limits(
                    max_connections=per_client,
                    max_keepalive_connections=per_client,
                    # Shorter than the usual server keep-alive (uvicorn, hence vLLM: 5 s),
                    # so the gateway does not pick a connection the upstream is about to
                    # close.
                    keepalive_expiry=KEEPALIVE_EXPIRY_S,
                ),
                transport=transport,
            )
            for _ in range(count)
        )
        self._turn = itertools.cycle(self.clients)

    def next_client(self) -> httpx.AsyncClient:
        """The pool the next request goes through (round-robin)."""
        return next(self._turn)

    async def open(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stream: bool = False
    ) -> httpx.Response:
        """Send a request and return the response with its body still unread.

        The caller reads the body (``aiter_raw``/``aread``) and must ``aclose`` it.

        Raises:
            GatewayError: the upstream is unreachable, too slow, or answered an error.
        """
        content = None if body is None else _request_content(body)
        # Identity encoding: the body is relayed byte for byte, so it must not be compressed.
        headers = {"Accept-Encoding": "identity"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Accept"] = "text/event-stream"
        client = self.next_client()
        request = client.build_request(method, path, content=content, headers=headers)
        started = time.perf_counter()
        try:
            try:
                response = await client.send(request, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled keep-alive connection the upstream closed just as it was
                # reused: nothing was answered, so send once more on a fresh one.
                response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            self.metrics.upstream_errors.labels(kind="timeout").inc()
            raise upstream_timeout(
                f"the upstream did not answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            self.metrics.upstream_errors.labels(kind="connect").inc()
            logger.warning("upstream unreachable: %r", exc)
            raise upstream_unavailable(f"the upstream could not be reached: {exc}") from exc
        self.metrics.upstream_seconds.labels(stream=str(stream).lower()).observe(
            time.perf_counter() - started
        )
        if response.is_success:
            return response
        try:
            raise await self._error_from(response)
        finally:
            await response.aclose()

    async def _error_from(self, response: httpx.Response) -> GatewayError:
        status = response.status_code
        self.metrics.upstream_errors.labels(kind=f"status_{status}").inc()
        text, payload = "", None
        try:
            await response.aread()
            text = response.text
            payload = response.json()
        except (httpx.HTTPError, ValueError):
            pass
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, str):  # some servers answer {"error": "..."}
            error = {"message": error}
        if not isinstance(error, dict):
            error = {"message": text[:500]}
        message = str(error.get("message") or f"HTTP {status}")
        if status in (401, 403):
            logger.error("the upstream refused the gateway's credentials (HTTP %s)", status)
            return upstream_unavailable(
                f"the upstream refused the gateway's credentials (HTTP {status})"
            )
        if status >= 500 or status < 400:
            return upstream_unavailable(f"the upstream failed with HTTP {status}: {message}")
        return GatewayError(
            status,
            message,
            type=str(error.get("type") or "invalid_request_error"),
            code=error.get("code") if isinstance(error.get("code"), str) else None,
            param=error.get("param") if isinstance(error.get("param"), str) else None,
        )

    async def aclose(self) -> None:
        """Close the pooled connections of every pool (each is closed even if one fails)."""
        results = await asyncio.gather(
            *(client.aclose() for client in self.clients), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result


def json_bytes(value: Any) -> bytes:
    """``value`` as UTF-8 JSON.

    A lone surrogate (``"\\ud800"`` is valid JSON, but not encodable as UTF-8) is kept
    as its ``\\u`` escape, so a body the gateway accepted can always be sent on.

    Raises:
        RecursionError, ValueError: ``value`` cannot be serialised.
    """
    try:
        return json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


def _request_content(body: dict[str, Any]) -> bytes:
    try:
        return json_bytes(body)
    except RecursionError as exc:
        # Parsed at one stack depth, serialised at a deeper one: a body nested close
        # to the interpreter's limit can pass the first and fail the second.
        raise invalid_request("the request body is nested too deeply", code="invalid_json") from exc


__all__ = ["KEEPALIVE_EXPIRY_S", "Upstream", "json_bytes"]
