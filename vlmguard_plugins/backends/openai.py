"""Run the rewriter on any OpenAI-compatible server: vLLM, SGLang, Ollama, OpenAI.

Built on the official ``openai`` SDK's async client.  Images travel as base64
``image_url`` data URLs, downscaled to a longest side.  Failures are retried with
exponential backoff and jitter (honouring ``Retry-After``), requests are spread
round-robin over several replicas with failover, and every error ends as a typed
:class:`~vlmguard_plugins.errors.BackendError`, so the Rewriter's failure policy
applies.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import os
import random
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import (
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadResponseError,
    ConfigurationError,
    ModelNotFoundError,
    RateLimitError,
)
from .base import Generation, GenerationRequest

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DEFAULT_BASE_URL = "http://localhost:8000/v1"
BASE_URL_ENV = "VLMGUARD_BASE_URL"
API_KEY_ENVS = ("VLMGUARD_API_KEY", "OPENAI_API_KEY")
logger = logging.getLogger(__name__)

# vLLM, SGLang and Ollama accept any key when started without one; the SDK needs a value.
PLACEHOLDER_API_KEY = "EMPTY"


@dataclass
class _Replica:
    """One base URL and when it may be tried again after a connection failure."""

    base_url: str
    down_until: float = 0.0


@dataclass
class _LoopState:
    """Clients and the concurrency limit bound to one event loop (HTTP pools are)."""

    clients: dict[str, AsyncOpenAI] = field(default_factory=dict)
    semaphore: asyncio.Semaphore | None = None


# Answers from a live server that another attempt may well fix.
_RETRYABLE = (RateLimitError, BackendUnavailableError, BackendTimeoutError)


class _RetryableFailure(Exception):
    """A failure worth another attempt; ``error`` is what the caller gets if none succeeds."""

    def __init__(self, error: BackendError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class _ReplicaUnreachable(Exception):
    """The replica could not be connected to: try the next one right away."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


def _split_base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    urls = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    cleaned = [url.strip().rstrip("/") for url in urls if url and url.strip()]
    if not cleaned:
        raise ConfigurationError("the openai backend needs at least one base_url")
    for url in cleaned:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must be an http(s) URL, got {url!r}")
    return list(dict.fromkeys(cleaned))


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds asked for by ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _server_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    return str(getattr(exc, "message", exc))


class OpenAIBackend:
    """A rewriter model served behind an OpenAI-compatible chat-completions API.

    Args:
        model: the served model name (``vllm serve ... --served-model-name``).
        base_url: the server's ``/v1`` URL, several of them (a list, or one string
            separated by commas) to spread load over replicas.  Defaults to
            ``VLMGUARD_BASE_URL`` or ``http://localhost:8000/v1``.
        api_key: defaults to ``VLMGUARD_API_KEY``, then ``OPENAI_API_KEY``, then a
            placeholder (servers started without ``--api-key`` accept any).
        timeout_s: time limit of one HTTP request; a slower answer is retried.  Keep
            it well under the Rewriter's own ``timeout_s`` (60 s), which bounds the
            whole call, retries included.
        connect_timeout_s: time limit to open a connection to a replica.
        max_retries: further attempts after a 429, a 5xx, a timeout (or 408), a malformed
            answer or every replica being unreachable.  401/403, 404 and other 4xx are
            not retried.
        backoff_s / max_backoff_s: the exponential backoff: attempt ``n`` waits a random
            time in ``[d/2, d]`` with ``d = min(max_backoff_s, backoff_s * 2**n)``; a
            ``Retry-After`` from the server replaces it.
        max_retry_after_s: a ``Retry-After`` longer than this is not waited for: the
            error is raised at once.
        max_concurrency: most HTTP requests in flight from this backend.
        failover_cooldown_s: how long a replica that refused a connection is tried
            only after the others.
        image_max_side: images are downscaled so their longest side is at most this
            (``None`` sends them at full size).
        image_format: ``"PNG"``, ``"JPEG"`` or ``"WEBP"`` to re-encode every image;
            ``None`` keeps web-format bytes as they came and uses PNG otherwise.
        extra_body: server-specific fields merged into every request body (vLLM's
            ``top_k``/``repetition_penalty``, Ollama's ``options``...).
        default_headers: HTTP headers sent with every request.

    Example::

        load_backend(
            "openai",
            model="vlmguard-r1",
            base_url=["http://gpu-0:8000/v1", "http://gpu-1:8000/v1"],
        )
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        max_concurrency: int = 32,
        failover_cooldown_s: float = 5.0,
        image_max_side: int | None = 1024,
        image_format: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            import openai  # noqa: F401  (fail here, with the install hint, not on first use)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "the openai backend needs the openai SDK: pip install 'vlmguard-plugins[remote]'"
            ) from exc
        if not model:
            raise ConfigurationError("the openai backend needs model= (the served model name)")
        if max_retries < 0:
            raise ConfigurationError("max_retries must be 0 or more")
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ConfigurationError("timeouts must be positive")
        if image_format is not None and image_format.upper() not in {"PNG", "JPEG", "WEBP"}:
            raise ConfigurationError("image_format must be PNG, JPEG, WEBP or None")
        self.model = model
        self.base_urls = _split_base_urls(base_url)
        self.api_key = api_key or next(
            (os.environ[name] for name in API_KEY_ENVS if os.environ.get(name)),
            PLACEHOLDER_API_KEY,
        )
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.max_concurrency = max_concurrency
        self.failover_cooldown_s = failover_cooldown_s
        self.image_max_side = image_max_side
        self.image_format = image_format.upper() if image_format else None
        self.extra_body = dict(extra_body or {})
        self.default_headers = dict(default_headers or {})
        self._replicas = [_Replica(url) for url in self.base_urls]
        self._turn = itertools.count()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_urls!r})"

    # -- the Backend protocol ----------------------------------------------------------

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """Complete one chat, retrying and failing over as configured."""
        payload = await self._payload(request)
        failure: _RetryableFailure | None = None
        for attempt in range(self.max_retries + 1):
            if failure is not None:
                delay = self._delay(attempt - 1, failure.retry_after_s)
                if delay is None:
                    break
                logger.info("retry %d/%d in %.2f s: %s", attempt, self.max_retries, delay, failure)
                await asyncio.sleep(delay)
            try:
                return await self._attempt(payload, request)
            except _RetryableFailure as exc:
                failure = exc
        assert failure is not None
        raise failure.error

    async def aclose(self) -> None:
        """Close the HTTP connections opened from the running event loop."""
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await asyncio.gather(*(client.close() for client in state.clients.values()))

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def alist_models(self) -> list[str]:
        """The model names the first reachable replica serves (``GET /v1/models``)."""
        import openai

        last: BackendError | None = None
        for replica in self._replicas_in_turn():
            try:
                page = await self._client(replica.base_url).models.list()
            except openai.APIConnectionError as exc:
                last = BackendUnavailableError(f"{replica.base_url} is unreachable: {exc}")
                continue
            except openai.APIStatusError as exc:
                raise self._status_error(exc, replica.base_url) from exc
            return [model.id for model in page.data]
        assert last is not None
        raise last

    # -- one request -------------------------------------------------------------------

    async def _payload(self, request: GenerationRequest) -> dict[str, Any]:
        messages = [
            {"role": message["role"], "content": await self._content(message["content"])}
            for message in request.messages
        ]
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.seed is not None:
            payload["seed"] = request.seed
        return payload

    async def _content(self, parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if all(part.get("type") == "text" for part in parts):
            # Plain strings are understood by every server (Ollama's system role included).
            return "".join(part["text"] for part in parts)
        content: list[dict[str, Any]] = []
        for part in parts:
            if part.get("type") == "image":
                # Encoding is cached on the image; the first one may take milliseconds,
                # which must not stall the other requests sharing the event loop.
                url = await asyncio.to_thread(
                    part["image"].data_url, self.image_max_side, self.image_format
                )
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": part["text"]})
        return content

    async def _attempt(self, payload: dict[str, Any], request: GenerationRequest) -> Generation:
        """Send once, trying each replica in turn while they refuse connections."""
        unreachable: list[str] = []
        for replica in self._replicas_in_turn():
            try:
                return await self._send(replica, payload, request)
            except _ReplicaUnreachable as exc:
                replica.down_until = time.monotonic() + self.failover_cooldown_s
                logger.warning("rewriter replica unreachable, failing over: %s", exc)
                unreachable.append(str(exc))
        tried = "; ".join(unreachable)
        raise _RetryableFailure(
            BackendUnavailableError(f"no rewriter server could be reached ({tried})")
        )

    async def _send(
        self, replica: _Replica, payload: dict[str, Any], request: GenerationRequest
    ) -> Generation:
        import openai

        client = self._client(replica.base_url)
        where = f"{replica.base_url} (model {self.model!r})"
        async with self._semaphore():
            try:
                completion = await client.chat.completions.create(
                    **payload, extra_body=self.extra_body or None
                )
            except openai.APITimeoutError as exc:
                raise _RetryableFailure(
                    BackendTimeoutError(f"{where} did not answer within {self.timeout_s} s")
                ) from exc
            except openai.APIConnectionError as exc:
                raise _ReplicaUnreachable(
                    BackendUnavailableError(f"{replica.base_url}: {exc.__cause__ or exc}")
                ) from exc
            except openai.APIStatusError as exc:
                error = self._status_error(exc, where)
                if isinstance(error, _RETRYABLE):
                    retry_after = _retry_after_seconds(exc.response.headers)
                    raise _RetryableFailure(error, retry_after) from exc
                raise error from exc
            except (openai.APIResponseValidationError, ValueError) as exc:
                raise _RetryableFailure(
                    BadResponseError(f"{where} answered with a malformed body: {exc}")
                ) from exc
            except openai.OpenAIError as exc:  # anything else the SDK reports
                raise BackendError(f"{where} failed: {exc}") from exc
        replica.down_until = 0.0
        return self._generation(completion, request, where)

    def _generation(self, completion: Any, request: GenerationRequest, where: str) -> Generation:
        choices = getattr(completion, "choices", None)
        if not choices:
            raise _RetryableFailure(BadResponseError(f"{where} answered without any choice"))
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise _RetryableFailure(BadResponseError(f"{where} answered without message content"))
        usage = getattr(completion, "usage", None)
        return Generation(
            text=_restore_stop(text, request.stop, getattr(choice, "finish_reason", None)),
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    def _status_error(self, exc: Any, where: str) -> BackendError:
        status = exc.status_code
        detail = f"{where} answered HTTP {status}: {_server_message(exc)}"
        if status in (401, 403):
            return AuthenticationError(f"{detail} (check api_key / VLMGUARD_API_KEY)")
        if status == 404:
            return ModelNotFoundError(f"{detail} (check model= against GET /v1/models)")
        if status == 429:
            return RateLimitError(detail)
        if status == 408:
            return BackendTimeoutError(detail)
        if status >= 500:
            return BackendUnavailableError(detail)
        return BackendError(detail)

    # -- retries, replicas, per-loop state ---------------------------------------------

    def _delay(self, retry: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); None: do not retry."""
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_retry_after_s else None
        ceiling = min(self.max_backoff_s, self.backoff_s * (2**retry))
        return random.uniform(ceiling / 2, ceiling)

    def _replicas_in_turn(self) -> list[_Replica]:
        """Every replica, starting at the next in round-robin order; resting ones last."""
        start = next(self._turn) % len(self._replicas)
        rotated = self._replicas[start:] + self._replicas[:start]
        now = time.monotonic()
        return [r for r in rotated if r.down_until <= now] + [
            r for r in rotated if r.down_until > now
        ]

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = _LoopState(semaphore=asyncio.Semaphore(self.max_concurrency))
            self._states[loop] = state
        return state

    def _semaphore(self) -> asyncio.Semaphore:
        semaphore = self._state().semaphore
        assert semaphore is not None
        return semaphore

    def _client(self, base_url: str) -> AsyncOpenAI:
        from openai import AsyncOpenAI, Timeout

        state = self._state()
        client = state.clients.get(base_url)
        if client is None:
            client = AsyncOpenAI(
                base_url=base_url,
                api_key=self.api_key,
                # Retries live here, so they can fail over and honour our limits.
                max_retries=0,
                timeout=Timeout(self.timeout_s, connect=self.connect_timeout_s),
                default_headers=self.default_headers or None,
            )
            state.clients[base_url] = client
        return client


def _restore_stop(text: str, stop: Sequence[str], finish_reason: str | None) -> str:
    """Put back the ``</rewrite>`` that OpenAI-compatible servers cut off at a stop.

    Servers end the text *before* a stop sequence; the output contract wants it closed.
    """
    if finish_reason != "stop" or not stop:
        return text
    if any(sequence in text for sequence in stop):
        return text
    for sequence in stop:
        opening = sequence.replace("</", "<", 1)
        if sequence.startswith("</") and text.count(opening) > text.count(sequence):
            return text + sequence
    return text


__all__ = ["DEFAULT_BASE_URL", "OpenAIBackend"]
