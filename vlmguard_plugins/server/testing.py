"""Loopback doubles for testing code that talks to the gateway (and the gateway itself).

``FakeUpstream`` is an OpenAI-compatible VLM server that records every request it
receives and answers from a script, streaming server-sent events chunk by chunk;
``run_in_thread`` serves any ASGI app with uvicorn on 127.0.0.1 for a ``with`` block::

    upstream = FakeUpstream(chunks=["Hello", " world"])
    with run_in_thread(upstream.app) as upstream_url:
        settings = GatewaySettings(upstream_url=f"{upstream_url}/v1")
        with run_in_thread(create_app(settings, rewriter)) as gateway_url:
            ...  # point an OpenAI client at f"{gateway_url}/v1"
    upstream.requests[0].body["messages"]  # what the VLM received
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class ReceivedRequest:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None

    @property
    def last_user_content(self) -> Any:
        """The content of the last user message, as the upstream got it."""
        messages = (self.body or {}).get("messages", [])
        return next(m["content"] for m in reversed(messages) if m.get("role") == "user")


@dataclass
class FakeUpstream:
    """A scripted OpenAI-compatible VLM server for loopback tests and benchmarks.

    Args:
        chunks: the answer's pieces; streamed one SSE event each, joined otherwise.
        chunk_delay_s: pause before each streamed piece.
        delay_s: pause before answering at all (a slow upstream).
        fail_status: answer every chat request with this HTTP status and an error body.
        break_after_chunks: drop the connection after this many streamed pieces.
        hold_after_first_chunk_s: after the first streamed piece, wait until
            :attr:`release` is set (or this many seconds): proves the client got the
            first piece before the rest existed.
        model: the model id served.
        record: keep every request in :attr:`requests` (turn off for load runs).

    :attr:`abandoned_streams` counts streams that ended before their last event (the
    connection was closed by the other side, or ``break_after_chunks``).
    """

    chunks: list[str] = field(default_factory=lambda: ["The ", "answer ", "is ", "safe."])
    chunk_delay_s: float = 0.0
    delay_s: float = 0.0
    fail_status: int | None = None
    break_after_chunks: int | None = None
    hold_after_first_chunk_s: float | None = None
    model: str = "fake-vlm"
    record: bool = True
    requests: list[ReceivedRequest] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    released_in_time: bool | None = None
    abandoned_streams: int = 0

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _models(self, request: Request) -> Response:
        self._remember(request, None)
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "me"}]}
        )

    async def _chat(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self._remember(request, body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return JSONResponse(
                {"error": {"message": "scripted failure", "type": "server_error", "code": None}},
                status_code=self.fail_status,
            )
        if body.get("stream"):
            return StreamingResponse(self._events(), media_type="text/event-stream")
        return JSONResponse(self._completion())

    def _remember(self, request: Request, body: dict[str, Any] | None) -> None:
        if self.record:
            self.requests.append(
                ReceivedRequest(request.method, request.url.path, dict(request.headers), body)
            )

    def _completion(self) -> dict[str, Any]:
        content = "".join(self.chunks)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": len(self.chunks),
                "total_tokens": 0,
            },
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(payload)}\n\n".encode()

    async def _events(self) -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event in self._scripted_events():
                yield event
            finished = True
        finally:
            if not finished:
                self.abandoned_streams += 1

    async def _scripted_events(self) -> AsyncIterator[bytes]:
        yield self._chunk({"role": "assistant", "content": ""})
        for number, piece in enumerate(self.chunks):
            if self.break_after_chunks is not None and number >= self.break_after_chunks:
                raise ConnectionAbortedError("scripted break of the stream")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield self._chunk({"content": piece})
            if number == 0 and self.hold_after_first_chunk_s is not None:
                released = await asyncio.to_thread(self.release.wait, self.hold_after_first_chunk_s)
                self.released_in_time = released
        yield self._chunk({}, finish_reason="stop")
        yield b"data: [DONE]\n\n"


@contextmanager
def run_in_thread(
    app: Any,
    *,
    host: str = "127.0.0.1",
    graceful_shutdown_s: float = 5.0,
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of ``host``; yields its ``http://`` URL.

    ``log_level="info"`` turns uvicorn's access log on (to test what it records).
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        # Annotated as int by uvicorn, but used as an asyncio timeout: fractions work.
        timeout_graceful_shutdown=graceful_shutdown_s,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=graceful_shutdown_s + 10)
        sock.close()
