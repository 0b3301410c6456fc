"""The gateway's FastAPI application: OpenAI-compatible routes in front of an upstream VLM.

A chat request's ``messages`` go through the core guard (:mod:`.guard`): every text and
image of every turn is checked, the rewrite is written back by the core, and every
other field of the body is forwarded as the client sent it.

``create_app(settings)`` builds everything from :class:`GatewaySettings`; tests and
embedding code pass their own :class:`~vlmguard_plugins.Rewriter` instead::

    from vlmguard_plugins import Rewriter
    from vlmguard_plugins.server import GatewaySettings, create_app
    from vlmguard_plugins.testing import ScriptedBackend

    app = create_app(
        GatewaySettings(upstream_url="http://127.0.0.1:8000/v1"),
        rewriter=Rewriter(ScriptedBackend.rewriting_to("Describe it safely.")),
    )
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..audit import AuditLog, new_request_id
from ..errors import ConfigurationError
from ..rewriter import Rewriter
from ..speculative import SpeculationStats
from .chat import ChatCompletionRequest
from .config import ENV_PREFIX, GatewaySettings
from .errors import GatewayError, error_response, invalid_request
from .guard import Guard, RequestContext, guard_report
from .metrics import GatewayMetrics
from .relay import broken_upstream, fetch_whole, relay_stream, whole_response
from .shadow import ShadowGuard
from .speculation import SpeculativeRelay
from .upstream import Upstream

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

logger = logging.getLogger("vlmguard_plugins.server")

_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/models", "/healthz", "/metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def build_rewriter(
    settings: GatewaySettings, *, tracer_provider: TracerProvider | None = None
) -> Rewriter:
    """The rewriter described by ``settings`` (backend, model, limits, policy, tracing).

    Built through the core's :class:`~vlmguard_plugins.RewriterSettings`, as every
    entry point builds its rewriter; its spans go to ``tracer_provider`` (``None``: the
    global OpenTelemetry provider).
    """
    return settings.rewriter_settings().build(tracer_provider=tracer_provider)


class RedactQueryStrings(logging.Filter):
    """Removes query strings from the request paths a log record carries.

    A client may put a credential in the URL (``?api_key=...``).  The gateway never
    reads one there, and it must not write one to its logs either: uvicorn's access
    log records the path with its query string, so the query is cut at the logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_has_query(arg) for arg in record.args):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _has_query(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "?" in value


def _without_query(value: object) -> object:
    if isinstance(value, str) and _has_query(value):
        return value.split("?", 1)[0]
    return value


ACCESS_LOGGERS = ("uvicorn.access",)
"""The loggers that record request URLs, on which :class:`RedactQueryStrings` is installed."""


def redact_access_logs() -> None:
    """Install :class:`RedactQueryStrings` on the access loggers (once per process).

    Logging configuration (uvicorn's included) replaces a logger's handlers but keeps
    its filters, so installing it before the server starts is enough.
    """
    for name in ACCESS_LOGGERS:
        access = logging.getLogger(name)
        if not any(isinstance(existing, RedactQueryStrings) for existing in access.filters):
            access.addFilter(RedactQueryStrings())


class _RequestMetrics:
    """ASGI middleware counting answered requests by endpoint and status, and those in flight."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()


class _ConcurrencyLimit:
    """ASGI middleware answering 503 (OpenAI-style) past ``limit`` API requests in flight.

    ``/healthz`` and ``/metrics`` are not counted, so probes and scrapes still work
    when the gateway is full.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            busy = error_response(
                503,
                f"the gateway is serving its limit of {self.limit} requests; retry shortly",
                type="server_error",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


INLINE_PARSE_MAX_BYTES = 256 * 1024
"""Bodies up to this size are parsed on the event loop; larger ones in a thread."""


async def _read_json_body(request: Request, limit: int) -> dict[str, Any]:
    too_large = GatewayError(
        413,
        f"the request body is over the gateway's limit of {limit} bytes",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        if len(raw) <= INLINE_PARSE_MAX_BYTES:
            body = json.loads(raw, parse_constant=_not_json)
        else:
            # Parsing megabytes of JSON takes long enough to stall every other request
            # (and /healthz) if it ran on the event loop.
            body = await asyncio.to_thread(json.loads, raw, parse_constant=_not_json)
    except RecursionError as exc:
        raise invalid_request(
            "the request body is not valid JSON: it is nested too deeply", code="invalid_json"
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError included
        raise invalid_request(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(body, dict):
        raise invalid_request("the request body must be a JSON object", code="invalid_json")
    return body


def _not_json(name: str) -> Any:
    # Python's json module reads NaN and Infinity; JSON has neither, and an upstream
    # would choke on them when the body is sent on.
    raise ValueError(f"{name} is not a JSON value")


def _validated(body: dict[str, Any]) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise invalid_request(
            f"invalid chat completion request: {param}: {first['msg']}"
            + (f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""),
            code="invalid_request",
            param=param,
        ) from exc


def request_id_of(request: Request) -> str:
    """The client's ``X-Request-Id`` when it is a plain short token, else a fresh id.

    The id goes to the audit log and back to the client, so anything else (long,
    control characters, quotes) is replaced rather than written.
    """
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else new_request_id()


def open_audit_log(settings: GatewaySettings) -> AuditLog | None:
    """The audit log ``settings`` ask for (``-``: standard output), or None.

    Raises:
        ConfigurationError: the file cannot be opened for appending.
    """
    if settings.audit_log is None:
        return None
    if settings.audit_log == "-":
        return AuditLog(sys.stdout, include_text=settings.audit_include_text)
    try:
        return AuditLog(settings.audit_log, include_text=settings.audit_include_text)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot open the audit log {settings.audit_log!r}: {exc.strerror or exc}"
        ) from exc


def create_app(
    settings: GatewaySettings,
    rewriter: Rewriter | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the gateway.

    Args:
        settings: upstream, security, limits and policy.
        rewriter: the rewriter to use; built from ``settings`` when None.  A rewriter
            given here keeps its own limits, URL policy, ``unsupported_content`` setting
            and telemetry (the gateway's ``on_error`` still decides failures), and is
            not closed when the app shuts down.
        tracer_provider: the OpenTelemetry provider that the rewriter built from
            ``settings`` records its spans with; ``None`` uses the global one.

    The ``mode`` setting decides how the guard stands in the request path: ``enforce``
    guards then forwards the guarded request; ``shadow`` forwards the original at once
    and guards beside it (:mod:`.shadow`); ``speculative`` forwards the original while
    guarding and releases its answer only on a verdict that changes nothing
    (:mod:`.speculation`).  Every decision goes to the audit log when ``audit_log`` is
    set.

    Raises:
        ConfigurationError: the rewriter backend cannot be built from ``settings``, or
            the audit log cannot be opened.
    """
    redact_access_logs()
    metrics = GatewayMetrics()
    # Opened first: a wrong path fails before a rewriter model is loaded for nothing.
    audit = open_audit_log(settings)
    owns_rewriter = rewriter is None
    rewriter = rewriter or build_rewriter(settings, tracer_provider=tracer_provider)
    guard = Guard(rewriter, settings.on_error, metrics, audit=audit, mode=settings.mode)
    if settings.mode == "shadow" and audit is None:
        logger.warning("shadow mode without an audit log: only the metrics record decisions")
    upstream = Upstream(
        settings.upstream_url,
        api_key=(
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        ),
        timeout_s=settings.upstream_timeout_s,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        max_connections=settings.upstream_max_connections,
        metrics=metrics,
        clients=settings.upstream_clients,
    )
    client_keys = [key.encode("utf-8") for key in settings.client_api_keys]
    shadow = ShadowGuard(guard, settings.shadow_max_concurrency)
    speculation = SpeculationStats()
    speculative = SpeculativeRelay(
        guard,
        upstream,
        metrics,
        speculation,
        max_held_chunks=settings.speculative_max_held_chunks,
        expose_analysis=settings.expose_analysis,
    )
    if settings.mode == "speculative":
        metrics.watch_speculation(speculation)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Shadow rewrites still need the rewriter; they get the same grace as requests.
        await shadow.aclose(settings.graceful_shutdown_s)
        await upstream.aclose()
        if owns_rewriter:
            await rewriter.aclose()
        if audit is not None:
            audit.close()

    app = FastAPI(
        title="vlmguard gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.rewriter = rewriter
    app.state.upstream = upstream
    app.state.audit = audit
    app.state.shadow = shadow
    app.state.speculation = speculation

    def require_client_key(request: Request) -> None:
        if not client_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode("utf-8")
        # Compare against every key so timing does not tell which prefix matched.
        matches = [hmac.compare_digest(given, key) for key in client_keys]
        if scheme.lower() != "bearer" or not any(matches):
            raise GatewayError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), code=code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, str(exc), code="invalid_request")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected gateway error", exc_info=exc)
        return error_response(500, "internal gateway error", type="server_error")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models", dependencies=[Depends(require_client_key)])
    async def list_models() -> Response:
        response = await upstream.open("GET", "models")
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise broken_upstream(metrics, exc) from exc
        finally:
            await response.aclose()
        return Response(content, status_code=response.status_code, media_type="application/json")

    @app.post("/v1/chat/completions", dependencies=[Depends(require_client_key)])
    async def chat_completions(request: Request) -> Response:
        body = await _read_json_body(request, settings.max_body_bytes)
        chat = _validated(body)
        context = RequestContext(request_id_of(request), chat.model)
        headers = {"X-Request-Id": context.request_id}
        if settings.mode == "shadow":
            # The original goes upstream untouched and at once; the guard only records.
            shadow.submit(body["messages"], context)
            if chat.stream:
                return await relay_stream(upstream, metrics, body, chat.model, None, headers)
            return whole_response(
                metrics, await fetch_whole(upstream, metrics, body), None, headers
            )
        if settings.mode == "speculative":
            return await speculative.respond(
                body,
                context,
                stream=chat.stream,
                model=chat.model,
                headers=headers,
                receive=request.receive,
            )
        outcome = await guard.check(body["messages"], context)
        # Every other field of the body goes on as the client sent it.
        body["messages"] = outcome.messages
        report = guard_report(outcome) if settings.expose_analysis else None
        if chat.stream:
            return await relay_stream(upstream, metrics, body, chat.model, report, headers)
        return whole_response(metrics, await fetch_whole(upstream, metrics, body), report, headers)

    if settings.max_concurrent_requests is not None:
        app.add_middleware(_ConcurrencyLimit, limit=settings.max_concurrent_requests)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


APP_FACTORY = "vlmguard_plugins.server.app:create_app_from_env"
"""The import string of :func:`create_app_from_env`, for ``uvicorn --factory``."""
STARTUP_FAILURE = 3
"""uvicorn's exit status for a worker that failed to start (``uvicorn.config``)."""


def create_app_from_env() -> FastAPI:
    """Build the gateway from the ``VLMGUARD_GATEWAY_*`` environment variables alone.

    The app factory of each worker process of ``vlmguard serve --workers N``; it also
    serves ``uvicorn --factory vlmguard_plugins.server.app:create_app_from_env``.

    A gateway that cannot be built (invalid variables, a rewriter that cannot load) is
    logged and ends the process with uvicorn's startup-failure status, so uvicorn's
    process manager stops instead of restarting the worker again and again.

    Raises:
        SystemExit: the gateway cannot be built.
    """
    try:
        return create_app(GatewaySettings.load())
    except Exception as exc:
        logger.error("the gateway could not start: %s", exc)
        raise SystemExit(STARTUP_FAILURE) from exc


def serve(
    settings: GatewaySettings,
    rewriter: Rewriter | None = None,
    log_level: str = "info",
    workers: int | None = None,
) -> None:
    """Run the gateway with uvicorn until SIGINT/SIGTERM, then finish requests in flight.

    With more than one worker (``workers``, else ``settings.workers``), uvicorn starts
    that many processes on the same socket, each building the gateway with
    :func:`create_app_from_env`: ``settings`` are put in this process's environment
    (``VLMGUARD_GATEWAY_*``, which the workers inherit) first.  A ready ``rewriter``
    cannot be shared with other processes, so it needs a single worker.

    uvicorn's access log records paths without their query strings
    (:class:`RedactQueryStrings`).

    Raises:
        ValueError: a ``rewriter`` with more than one worker.
        ConfigurationError: ``settings`` cannot be written as variables.
    """
    import uvicorn

    count = settings.workers if workers is None else workers
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        # Annotated as int by uvicorn, but used as an asyncio timeout: fractions work.
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "server_header": False,
    }
    if count <= 1:
        uvicorn.run(create_app(settings, rewriter), **options)
        return
    if rewriter is not None:
        raise ValueError("a ready rewriter cannot be shared by several worker processes")
    variables = settings.environment()
    for name in settings.unset_environment():
        os.environ.pop(name, None)
    os.environ.update(variables)
    os.environ[f"{ENV_PREFIX}WORKERS"] = "1"  # a worker is one process
    redact_access_logs()
    uvicorn.run(APP_FACTORY, factory=True, workers=count, **options)


__all__ = [
    "ACCESS_LOGGERS",
    "APP_FACTORY",
    "INLINE_PARSE_MAX_BYTES",
    "STARTUP_FAILURE",
    "RedactQueryStrings",
    "build_rewriter",
    "create_app",
    "create_app_from_env",
    "open_audit_log",
    "redact_access_logs",
    "request_id_of",
    "serve",
]
