"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

``ChatCompletionServer`` serves ``POST /v1/chat/completions`` (plain and ``stream=True``
server-sent events) and ``GET /v1/models`` from a background thread, answering with
any :class:`~vlmguard_plugins.backends.Backend` (the tiny model through the
transformers backend, a :class:`~vlmguard_plugins.testing.ScriptedBackend`) or a
plain function.  It records every request it received, counts the requests in
flight, and can inject the faults real servers produce::

    from openai import OpenAI
    from vlmguard_plugins.testing_server import ChatCompletionServer, RateLimited

    with ChatCompletionServer(responder=lambda request: "Hello!") as server:
        client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        server.inject(RateLimited(retry_after_s=0.1))    # the next request gets a 429
        ...
        assert server.chat_requests[-1].text == "What is in this picture?"
        assert server.max_in_flight <= 4

It answers like vLLM does: the ``model`` must match (else 404), stop sequences are cut
from the answer, errors are ``{"error": {...}}`` bodies.  Images must come as
``data:`` URLs; they are decoded with the core's validation before the backend sees
them.  Requires ``fastapi`` and ``uvicorn`` (``pip install 'vlmguard-plugins[server]'``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "vlmguard_plugins.testing_server needs fastapi and uvicorn: "
        "pip install 'vlmguard-plugins[server]'"
    ) from exc

from .backends.base import Backend, Generation, GenerationRequest
from .errors import VLMGuardError
from .images import PreparedImage, load_image

if TYPE_CHECKING:
    import uvicorn

Responder = Callable[[GenerationRequest], str]

DEFAULT_MODEL = "vlmguard-test"


# --- faults -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Something that goes wrong with one chat-completion request."""


@dataclass(frozen=True)
class RateLimited(Fault):
    """Answer 429 with a ``Retry-After`` header (``None`` sends no header)."""

    retry_after_s: float | None = 1.0


@dataclass(frozen=True)
class ServerError(Fault):
    """Answer with a 5xx status (500 by default) and an OpenAI-style error body."""

    status: int = 500
    message: str = "internal server error"


@dataclass(frozen=True)
class SlowAnswer(Fault):
    """Wait ``delay_s`` seconds, then answer normally (to run past a client's timeout)."""

    delay_s: float = 5.0


@dataclass(frozen=True)
class MalformedJSON(Fault):
    """Answer 200 ``application/json`` with a body that is not valid JSON."""


@dataclass(frozen=True)
class Unauthorized(Fault):
    """Answer 401, as a server does for a wrong API key."""


@dataclass
class _Injected:
    fault: Fault
    remaining: int | None  # None: every request until cleared


# --- what the server received -------------------------------------------------------


@dataclass
class ReceivedRequest:
    """One HTTP request the server received, recorded before any fault was applied."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat-completion request (empty for other requests)."""
        return list((self.body or {}).get("messages") or [])

    @property
    def image_urls(self) -> list[str]:
        """Every ``image_url`` of every message, in order."""
        return [
            part["image_url"]["url"]
            for message in self.messages
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image_url"
        ]

    @property
    def text(self) -> str:
        """The text of the last user message (all its text parts, joined by newlines)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content or [] if part.get("type") == "text")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


# --- the server ---------------------------------------------------------------------


class ChatCompletionServer:
    """An OpenAI-compatible chat-completions server on loopback, in a background thread.

    Args:
        backend: what answers; any :class:`Backend`.  It runs on the server's own
            event loop.
        responder: alternatively, a function from the :class:`GenerationRequest` to the
            answer's text.  With neither, every answer is a well-formed rewriter output
            that leaves the user's text unchanged.
        model: the model name served; a request for another model gets 404.
        delay_s: seconds every answer waits before it is sent (a model's latency).
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        host / port: where to listen; port 0 picks a free port (kept across restarts).
        stream_chunk_chars: characters per streamed chunk when ``stream=True``.

    Use it as a context manager (``with`` or ``async with``), or call :meth:`start` and
    :meth:`stop`.  A stopped server can be started again on the same port, to act as a
    replica that goes down and comes back.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        responder: Responder | None = None,
        model: str = DEFAULT_MODEL,
        delay_s: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        stream_chunk_chars: int = 8,
    ) -> None:
        if backend is not None and responder is not None:
            raise ValueError("give a backend or a responder, not both")
        if backend is None:
            from .testing import ScriptedBackend

            backend = ScriptedBackend(responder=responder or ScriptedBackend.echo_unchanged)
        self.backend = backend
        self.model = model
        self.delay_s = delay_s
        self.api_key = api_key
        self.host = host
        self.port = port
        self.stream_chunk_chars = max(1, stream_chunk_chars)
        self.requests: list[ReceivedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: list[_Injected] = []
        self._lock = threading.Lock()
        self._completions = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- addresses and records ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.port}"

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
        import uvicorn

        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        sock = socket.create_server((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._build_app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"chat-completion-server-{self.port}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + 15.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"the test server on port {self.port} did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop listening; requests still running get up to one second to finish."""
        if self._server is None or self._thread is None:
            return
        self._stopping.set()
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
        self._server, self._thread = None, None

    def __enter__(self) -> ChatCompletionServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> ChatCompletionServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- the application ---------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="vlmguard test chat-completions server")

        @app.get("/v1/models")
        async def list_models(request: Request) -> Response:
            self._record(request, None)
            if denied := self._check_key(request):
                return denied
            return JSONResponse(
                {
                    "object": "list",
                    "data": [
                        {"id": self.model, "object": "model", "created": 0, "owned_by": "vlmguard"}
                    ],
                }
            )

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self._record(request, body if isinstance(body, dict) else None)
            if not isinstance(body, dict):
                return _error(400, "the request body is not a JSON object", "invalid_request_error")
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            streaming = False
            try:
                response = await self._answer(request, body)
                # A stream leaves the in-flight count when its last event is sent.
                streaming = isinstance(response, StreamingResponse)
                return response
            finally:
                if not streaming:
                    self._leave()

        return app

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, request: Request, body: dict[str, Any] | None) -> None:
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
        return _error(401, "Incorrect API key provided.", "invalid_api_key")

    async def _answer(self, request: Request, body: dict[str, Any]) -> Response:
        if denied := self._check_key(request):
            return denied
        fault = self._next_fault()
        if isinstance(fault, Unauthorized):
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if isinstance(fault, RateLimited):
            headers = {}
            if fault.retry_after_s is not None:
                headers["retry-after"] = f"{fault.retry_after_s:g}"
            return _error(429, "Rate limit reached, retry later.", "rate_limit_exceeded", headers)
        if isinstance(fault, ServerError):
            return _error(fault.status, fault.message, "server_error")
        if isinstance(fault, MalformedJSON):
            return Response(
                b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "trunc',
                media_type="application/json",
            )
        delay = self.delay_s + (fault.delay_s if isinstance(fault, SlowAnswer) else 0.0)
        if delay and not await self._wait_unless_stopping(delay):
            return _error(503, "the server is shutting down", "server_error")
        try:
            # Decoding images blocks; other requests keep being served meanwhile.
            generation_request = await asyncio.to_thread(self._to_generation_request, body)
            generation = await self.backend.agenerate(generation_request)
        except _BadRequest as exc:
            return _error(exc.status, str(exc), exc.error_type)
        except Exception as exc:  # the backend's failure is the server's 500
            return _error(500, f"generation failed: {exc}", "server_error")
        text, finish_reason = _apply_stop(generation, generation_request)
        with self._lock:
            self._completions += 1
            completion_id = f"chatcmpl-{self.port}-{self._completions}"
        usage = {
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(
                completion_id, text, finish_reason, usage if include_usage else None
            )
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        )

    async def _wait_unless_stopping(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when the server began stopping meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return False
            await asyncio.sleep(min(left, 0.02))
        return True

    def _to_generation_request(self, body: dict[str, Any]) -> GenerationRequest:
        if body.get("model") != self.model:
            raise _BadRequest(
                404, f"The model `{body.get('model')}` does not exist.", "model_not_found"
            )
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise _BadRequest(400, "messages must be a non-empty list", "invalid_request_error")
        messages = [
            {"role": m.get("role", "user"), "content": _parts(m.get("content"))}
            for m in raw_messages
        ]
        stop = body.get("stop") or []
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        return GenerationRequest(
            messages=messages,
            max_new_tokens=int(max_tokens),
            temperature=float(body.get("temperature") or 0.0),
            stop=[stop] if isinstance(stop, str) else list(stop),
        )

    def _stream(
        self, completion_id: str, text: str, finish_reason: str, usage: dict[str, int] | None
    ) -> Response:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                yield chunk({"role": "assistant", "content": ""}, None)
                size = self.stream_chunk_chars
                for start in range(0, len(text), size):
                    yield chunk({"content": text[start : start + size]}, None)
                yield chunk({}, finish_reason)
                if usage is not None:
                    payload = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                self._leave()

        return StreamingResponse(events(), media_type="text/event-stream")


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
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"message": message, "type": error_type, "code": status, "param": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def dead_base_url(host: str = "127.0.0.1") -> str:
    """A ``base_url`` on a loopback port where nothing listens (a replica that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}/v1"


__all__ = [
    "ChatCompletionServer",
    "Fault",
    "MalformedJSON",
    "RateLimited",
    "ReceivedRequest",
    "Responder",
    "ServerError",
    "SlowAnswer",
    "Unauthorized",
    "dead_base_url",
]
