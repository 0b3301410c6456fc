"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

``ChatCompletionServer`` serves ``POST /v1/chat/completions`` (plain and ``stream=True``
server-sent events) and ``GET /v1/models`` from a background thread.  It answers with
fixed ``chunks`` (a VLM behind the gateway), any :class:`~vlmguard_plugins.backends.Backend`
(the tiny model through the transformers backend, a
:class:`~vlmguard_plugins.testing.ScriptedBackend`) or a plain function.  It records every
request it received, counts the requests in flight, and injects the faults real servers
produce::

    from openai import OpenAI
    from vlmguard_plugins.testing import ChatCompletionServer, RateLimited

    with ChatCompletionServer(responder=lambda request: "Hello!") as server:
        client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        server.inject(RateLimited(retry_after_s=0.1))    # the next request gets a 429
        ...
        assert server.chat_requests[-1].text == "What is in this picture?"
        assert server.max_in_flight <= 4

It answers like vLLM does: the ``model`` must match (else 404), stop sequences are cut
from a backend's answer, errors are OpenAI ``{"error": {...}}`` bodies.  When a backend
or responder answers, images must come as ``data:`` URLs; they are decoded with the
core's validation before the backend sees them.  Requires ``starlette`` and
``uvicorn`` (``pip install 'vlmguard-plugins[server]'``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ChatCompletionServer needs starlette and uvicorn: pip install 'vlmguard-plugins[server]'"
    ) from exc

from ..backends.base import Backend, Generation, GenerationRequest
from ..errors import VLMGuardError
from ..images import PreparedImage, load_image
from ..openai_errors import error_body, error_type_for_status
from . import faults
from ._lifecycle import Startable
from .faults import Fault
from .received import ReceivedRequest
from .scripted import Responder, ScriptedBackend
from .threaded import ServerThread

__all__ = ["DEFAULT_MODEL", "ChatCompletionServer"]

DEFAULT_MODEL = "vlmguard-test"


@dataclass
class _Injected:
    fault: Fault
    remaining: int | None  # None: every request until cleared


@dataclass
class _Answer:
    pieces: list[str]
    finish_reason: str
    usage: dict[str, int]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class ChatCompletionServer(Startable):
    """An OpenAI-compatible chat-completions server on loopback, in a background thread.

    Args:
        backend: what answers; any :class:`Backend`.  It runs on the server's own
            event loop.
        responder: alternatively, a function from the :class:`GenerationRequest` to the
            answer's text.
        chunks: alternatively, a fixed answer in pieces: streamed one event per piece,
            joined otherwise.  The request's messages are recorded, not decoded (a
            VLM behind the gateway).  With none of the three, every answer is a
            well-formed rewriter output that leaves the user's text unchanged.
        model: the model name served; a request for another model gets 404.
        delay_s: seconds every answer waits before it is sent (a model's latency).
        chunk_delay_s: seconds before each streamed piece.
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        host / port: where to listen; port 0 picks a free port (kept across restarts).
        stream_chunk_chars: characters per streamed piece of a backend's answer.
        record: keep every request in :attr:`requests` (turn off for load runs).

    Use it as a context manager (``with`` or ``async with``), or call :meth:`start` and
    :meth:`stop`; :attr:`app` is the ASGI application, to serve some other way.  A
    stopped server can be started again on the same port, to act as a replica that
    goes down and comes back.  :attr:`abandoned_streams` counts streams that ended
    before their last event (the client went away, or a :class:`BrokenStream`).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        responder: Responder | None = None,
        chunks: Sequence[str] | None = None,
        model: str = DEFAULT_MODEL,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_chunk_chars: int = 8,
        record: bool = True,
    ) -> None:
        given = [
            name
            for name, value in (("backend", backend), ("responder", responder), ("chunks", chunks))
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give one of backend, responder or chunks, not both {' and '.join(given)}"
            )
        if chunks is not None and not chunks:
            raise ValueError("chunks must hold at least one piece")
        if backend is None and chunks is None:
            backend = ScriptedBackend(responder=responder or ScriptedBackend.echo_unchanged)
        self.backend = backend
        self.chunks = list(chunks) if chunks is not None else None
        self.model = model
        self.delay_s = delay_s
        self.chunk_delay_s = chunk_delay_s
        self.api_key = api_key
        self.stream_chunk_chars = max(1, stream_chunk_chars)
        self.record = record
        self.requests: list[ReceivedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.abandoned_streams = 0
        self.release = threading.Event()
        self.released_in_time: bool | None = None
        self._faults: list[_Injected] = []
        self._lock = threading.Lock()
        self._completions = 0
        self._stopping = threading.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
            ]
        )
        self._thread = ServerThread(
            self.app, host=host, port=port, lifespan="off", graceful_shutdown_s=1.0
        )

    # -- addresses and records ---------------------------------------------------------

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._thread.host

    @property
    def port(self) -> int:
        """The port listened on (0 until the first start when a free port is picked)."""
        return self._thread.port

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:41234``."""
        return self._thread.url

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` to give clients: the root URL plus ``/v1``."""
        return f"{self.url}/v1"

    @property
    def chat_requests(self) -> list[ReceivedRequest]:
        """The chat-completion requests received, in order (faulted ones included)."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def reset(self) -> None:
        """Forget recorded requests, the in-flight peak and any injected faults."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight
            self._faults.clear()

    # -- faults ------------------------------------------------------------------------

    def inject(self, fault: Fault, *, times: int | None = 1) -> None:
        """Apply ``fault`` to the next ``times`` chat requests (``None``: all, until cleared).

        Several injected faults apply in the order they were injected.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None")
        with self._lock:
            self._faults.append(_Injected(fault, times))

    def clear_faults(self) -> None:
        """Remove every injected fault; requests are answered normally again."""
        with self._lock:
            self._faults.clear()

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            injected = self._faults[0]
            if injected.remaining is not None:
                injected.remaining -= 1
                if injected.remaining == 0:
                    self._faults.pop(0)
            return injected.fault

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ChatCompletionServer:
        """Start listening (returns once the server accepts connections)."""
        self._stopping.clear()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; requests still running get up to one second to finish."""
        self._stopping.set()
        self._thread.stop()

    async def __aenter__(self) -> ChatCompletionServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- the routes --------------------------------------------------------------------

    async def _list_models(self, request: Request) -> Response:
        self._record(request, None)
        if denied := self._check_key(request):
            return denied
        models = [{"id": self.model, "object": "model", "created": 0, "owned_by": "vlmguard"}]
        return JSONResponse({"object": "list", "data": models})

    async def _chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(request, body if isinstance(body, dict) else None)
        if not isinstance(body, dict):
            return _error(400, "the request body is not a JSON object")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        streaming = False
        try:
            response = await self._respond(request, body)
            # A stream leaves the in-flight count when its last event is sent.
            streaming = isinstance(response, StreamingResponse)
            return response
        finally:
            if not streaming:
                self._leave()

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, request: Request, body: dict[str, Any] | None) -> None:
        if not self.record:
            return
        received = ReceivedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(received)

    def _check_key(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _respond(self, request: Request, body: dict[str, Any]) -> Response:
        if denied := self._check_key(request):
            return denied
        fault = self._next_fault()
        if failed := _fault_response(fault):
            return failed
        delay = self.delay_s + (fault.delay_s if isinstance(fault, faults.SlowAnswer) else 0.0)
        if delay and not await self._wait_unless_stopping(delay):
            return _error(503, "the server is shutting down")
        try:
            answer = await self._answer(body)
        except _BadRequest as exc:
            return _error(exc.status, str(exc), type=exc.error_type)
        except Exception as exc:  # the backend's failure is the server's 500
            return _error(500, f"generation failed: {exc}")
        with self._lock:
            self._completions += 1
            completion_id = f"chatcmpl-{self.port}-{self._completions}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._events(completion_id, answer, include_usage, fault)
            return StreamingResponse(events, media_type="text/event-stream")
        message = {"role": "assistant", "content": "".join(answer.pieces)}
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": answer.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": answer.usage,
            }
        )

    async def _answer(self, body: dict[str, Any]) -> _Answer:
        if body.get("model") != self.model:
            raise _BadRequest(
                404, f"The model `{body.get('model')}` does not exist.", "model_not_found"
            )
        if self.chunks is not None:
            usage = _usage(0, len(self.chunks))
            return _Answer(list(self.chunks), "stop", usage)
        assert self.backend is not None  # set whenever chunks is not
        # Decoding images blocks; other requests keep being served meanwhile.
        generation_request = await asyncio.to_thread(_to_generation_request, body)
        generation = await self.backend.agenerate(generation_request)
        text, finish_reason = _apply_stop(generation, generation_request)
        size = self.stream_chunk_chars
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        usage = _usage(generation.prompt_tokens, generation.completion_tokens)
        return _Answer(pieces, finish_reason, usage)

    async def _wait_unless_stopping(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the server began stopping meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return False
            await asyncio.sleep(min(left, 0.02))
        return True

    async def _events(
        self, completion_id: str, answer: _Answer, include_usage: bool, fault: Fault | None
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        def delta(content: dict[str, Any], finish: str | None = None) -> str:
            return event([{"index": 0, "delta": content, "finish_reason": finish}])

        finished = False
        try:
            yield delta({"role": "assistant", "content": ""})
            for number, piece in enumerate(answer.pieces):
                if isinstance(fault, faults.BrokenStream) and number >= fault.after_chunks:
                    # Raised inside the response: uvicorn drops the connection mid-stream.
                    raise ConnectionAbortedError("scripted break of the stream")
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                yield delta({"content": piece})
                if number == 0 and isinstance(fault, faults.HeldStream):
                    self.released_in_time = await asyncio.to_thread(
                        self.release.wait, fault.timeout_s
                    )
            yield delta({}, answer.finish_reason)
            if include_usage:
                yield event([], usage=answer.usage)
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                with self._lock:
                    self.abandoned_streams += 1
            self._leave()


def _fault_response(fault: Fault | None) -> Response | None:
    """The error response a fault answers with; None for faults that shape the answer."""
    if isinstance(fault, faults.Unauthorized):
        return _error(401, "Incorrect API key provided.", code="invalid_api_key")
    if isinstance(fault, faults.RateLimited):
        headers = {}
        if fault.retry_after_s is not None:
            headers["retry-after"] = f"{fault.retry_after_s:g}"
        return _error(429, "Rate limit reached, retry later.", headers=headers)
    if isinstance(fault, faults.ServerError):
        return _error(fault.status, fault.message)
    if isinstance(fault, faults.ErrorStatus):
        return _error(fault.status, fault.message, type=fault.type)
    if isinstance(fault, faults.MalformedJSON):
        return Response(
            b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "trunc',
            media_type="application/json",
        )
    return None


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _to_generation_request(body: dict[str, Any]) -> GenerationRequest:
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _BadRequest(400, "messages must be a non-empty list", "invalid_request_error")
    messages = [
        {"role": m.get("role", "user"), "content": _parts(m.get("content"))} for m in raw_messages
    ]
    stop = body.get("stop") or []
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    return GenerationRequest(
        messages=messages,
        max_new_tokens=int(max_tokens),
        temperature=float(body.get("temperature") or 0.0),
        top_p=body.get("top_p"),
        seed=body.get("seed"),
        stop=[stop] if isinstance(stop, str) else list(stop),
    )


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _BadRequest(
            400, "message content must be a string or a list", "invalid_request_error"
        )
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            parts.append({"type": "image", "image": _image(part.get("image_url"))})
        else:
            raise _BadRequest(400, f"unsupported content part {kind!r}", "invalid_request_error")
    return parts


def _image(image_url: Any) -> PreparedImage:
    url = image_url.get("url", "") if isinstance(image_url, dict) else ""
    if not url.startswith("data:"):
        raise _BadRequest(400, "images must be sent as data: URLs", "invalid_request_error")
    try:
        return load_image(url, allow_local_files=False)
    except VLMGuardError as exc:
        raise _BadRequest(400, f"invalid image: {exc}", "invalid_request_error") from exc


def _apply_stop(generation: Generation, request: GenerationRequest) -> tuple[str, str]:
    """Cut the answer before the first stop sequence, as OpenAI-compatible servers do."""
    text = generation.text
    cut = min((i for s in request.stop if (i := text.find(s)) != -1), default=None)
    if cut is not None:
        return text[:cut], "stop"
    if generation.completion_tokens >= request.max_new_tokens:
        return text, "length"
    return text, "stop"


def _error(
    status: int,
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = error_body(message, type=type or error_type_for_status(status), code=code)
    return JSONResponse(body, status_code=status, headers=headers)
