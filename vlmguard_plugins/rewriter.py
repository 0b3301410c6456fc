"""The Rewriter: the one place where a request becomes a safe prompt."""

from __future__ import annotations

import asyncio
import re
import sys
import time
import weakref
from collections.abc import Coroutine, Sequence, Sized
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image
from pydantic import ValidationError

from ._sync import LoopThread
from .backends.base import STOP_SEQUENCE, Backend, Generation, GenerationRequest
from .cache import RewriteCache, cache_key
from .conversation.guard import aguard_conversation, report_inputs_checked
from .decode_pool import SHARED_POOL, DecodeMemoryPool, Reservation
from .errors import (
    BackendError,
    BackendTimeoutError,
    ConfigurationError,
    ContractViolationError,
    InputCheckTimeoutError,
    InputError,
    RewriteParseError,
    TextTooLongError,
    VLMGuardError,
)
from .images import ImageLimits, OpenedImages, PreparedImage, open_images
from .parsing import parse_output
from .policy import apply_failure_policy, validate_policy
from .prompts import SYSTEM_PROMPT, build_messages, neutralise_tags
from .telemetry import Telemetry, rewrite_tracer
from .types import (
    MAX_HISTORY_TURNS,
    FailurePolicyName,
    HistoryOverflow,
    HistoryTurn,
    RewriteRequest,
    RewriteResult,
    Risk,
    Usage,
)
from .urls import URLPolicy

if TYPE_CHECKING:
    from .conversation import Conversation, GuardedConversation, UnsupportedContentPolicy

T = TypeVar("T")

PARSE_INLINE_MAX_CHARS = 32_768
"""Model answers up to this length are parsed on the event loop; longer ones in a thread."""

_WHITESPACE = re.compile(r"\s+")


def _same_text(a: str, b: str) -> bool:
    return _WHITESPACE.sub(" ", a).strip() == _WHITESPACE.sub(" ", b).strip()


class Rewriter:
    """Rewrites a user's text (given its images) so a VLM answers safely and helpfully.

    Args:
        backend: where the rewriter model runs (see :func:`load_backend`).
        on_error: the failure policy: ``shield`` (default), ``raise``, ``passthrough``
            or ``block``.
        timeout_s: time limit for one rewrite (image loading, the backend call and parsing
            together); past it the failure policy applies.
        max_concurrency: most backend calls in flight at once from this rewriter.
        cache_size: keep this many results in an LRU cache (0 disables it).
        max_text_chars: longest accepted user text (and total history).
        image_limits: byte, pixel and count limits for images.
        url_policy: whether and where image URLs may be fetched.
        max_new_tokens / temperature: generation settings for the rewriter model.
        system_prompt: replace the zero-shot system prompt (for a fine-tuned model).
        max_history_turns: the most other turns the rewriter reads with a request.
        history_overflow: a conversation with more history than the rewriter reads is
            refused (``refuse``, default), or ``trim`` lets the oldest turns' text pass
            unread (images are always read).
        decode_pool: the process-wide cap on memory held by decoded images of requests in
            flight (:data:`~vlmguard_plugins.decode_pool.SHARED_POOL`, 1 GiB, by default).
        unsupported_content: what :meth:`aguard` does with a message part it cannot check
            (audio, video, a file): ``refuse`` (default) raises
            :class:`~vlmguard_plugins.errors.UnsupportedContentError`, ``drop`` removes
            the part before the model sees it.
        telemetry: OpenTelemetry spans, one per rewrite (see
            :mod:`vlmguard_plugins.telemetry`); by default recorded through the global
            tracer provider when ``opentelemetry-api`` is installed, without message content.

    Example::

        rw = Rewriter(backend=load_backend("transformers", model="Qwen/Qwen2.5-VL-3B-Instruct"))
        result = rw.rewrite("How do I use this?", images=["knife.jpg"])
        send_to_vlm(result.prompt, images=["knife.jpg"])
    """

    def __init__(
        self,
        backend: Backend,
        *,
        on_error: FailurePolicyName = "shield",
        timeout_s: float | None = 60.0,
        max_concurrency: int = 16,
        cache_size: int = 0,
        max_text_chars: int = 16_000,
        image_limits: ImageLimits | None = None,
        url_policy: URLPolicy | None = None,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        system_prompt: str = SYSTEM_PROMPT,
        unsupported_content: UnsupportedContentPolicy = "refuse",
        max_history_turns: int = MAX_HISTORY_TURNS,
        history_overflow: HistoryOverflow = "refuse",
        decode_pool: DecodeMemoryPool | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if unsupported_content not in ("refuse", "drop"):
            raise ConfigurationError(
                f"unknown unsupported_content {unsupported_content!r}; choose refuse or drop"
            )
        self.backend = backend
        self.on_error: FailurePolicyName = validate_policy(on_error)
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self.max_text_chars = max_text_chars
        self.image_limits = image_limits or ImageLimits()
        self.url_policy = url_policy or URLPolicy()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt
        if history_overflow not in ("refuse", "trim"):
            raise ConfigurationError(
                f"unknown history_overflow {history_overflow!r}; choose refuse or trim"
            )
        self.unsupported_content: UnsupportedContentPolicy = unsupported_content
        self.max_history_turns = max_history_turns
        self.history_overflow: HistoryOverflow = history_overflow
        self.decode_pool = decode_pool or SHARED_POOL
        self.cache = RewriteCache(cache_size) if cache_size > 0 else None
        # Held weakly: a rewriter used from many short-lived loops (asyncio.run per call)
        # must not keep every closed loop alive.
        self._semaphores: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        self._sync = LoopThread()
        # None when switched off or opentelemetry-api is missing: no telemetry work at all.
        self._tracer = rewrite_tracer(telemetry, backend)

    # -- public API -------------------------------------------------------------------

    async def arewrite(
        self,
        request: RewriteRequest | str,
        images: Sequence[Any] | None = None,
        *,
        history: Sequence[HistoryTurn | dict[str, str]] | None = None,
        on_error: FailurePolicyName | None = None,
    ) -> RewriteResult:
        """Rewrite one request (the primary, asynchronous path).

        ``request`` is a :class:`RewriteRequest` or the user's text, with ``images``
        and ``history`` given alongside.  ``on_error`` overrides the failure policy
        for this call.  Never fails open unless the policy is ``passthrough``.

        Raises:
            InputError: ``request`` is neither a string nor a :class:`RewriteRequest`,
                so there is no text for the failure policy to answer with.
            ConfigurationError: ``images`` or ``history`` given beside a
                :class:`RewriteRequest`.
        """
        policy = validate_policy(on_error) if on_error else self.on_error
        started = time.perf_counter()
        try:
            built = self._as_request(request, images, history)
        except InputError as error:
            # Refused before a request exists (history that does not validate, text that
            # is not a string): still one rewrite, so still one span.
            refusal = self._refuse_unbuilt(request, error, policy, started)
            return await self._traced(refusal, policy, _count(images), _count(history))
        return await self._run(built, policy, started, raise_input_errors=False)

    async def aguard(
        self,
        conversation: Conversation,
        *,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = False,
    ) -> GuardedConversation:
        """Guard a whole conversation: the entry point every adapter uses.

        Every image of every turn goes to the rewriter with the history; the last user
        turn's text is rewritten and written back in place.  Input the guard cannot
        check (an unsupported part, an unreadable image, a conversation over the limits)
        raises a typed :class:`~vlmguard_plugins.errors.InputError` whatever the
        failure policy, because it would otherwise reach the model unseen; rewriter
        failures go to the failure policy.  See :mod:`vlmguard_plugins.conversation`.
        """
        return await aguard_conversation(
            self, conversation, on_error=on_error, allow_local_files=allow_local_files
        )

    def guard(
        self,
        conversation: Conversation,
        *,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = False,
    ) -> GuardedConversation:
        """Synchronous :meth:`aguard` (safe to call from inside a running event loop)."""
        return self._sync.run(
            self.aguard(conversation, on_error=on_error, allow_local_files=allow_local_files)
        )

    async def arewrite_checked(
        self, request: RewriteRequest, *, on_error: FailurePolicyName | None = None
    ) -> RewriteResult:
        """Like :meth:`arewrite`, but input errors are raised instead of going to the policy.

        For callers that forward the request's images themselves: an image the rewriter
        could not load must not be forwarded under a fallback prompt.
        """
        policy = validate_policy(on_error) if on_error else self.on_error
        return await self._run(request, policy, time.perf_counter(), raise_input_errors=True)

    async def _run(
        self,
        request: RewriteRequest,
        policy: FailurePolicyName,
        started: float,
        *,
        raise_input_errors: bool,
    ) -> RewriteResult:
        run = self._run_untraced(request, policy, started, raise_input_errors=raise_input_errors)
        return await self._traced(run, policy, len(request.images), len(request.history))

    def _traced(
        self,
        run: Coroutine[Any, Any, RewriteResult],
        policy: FailurePolicyName,
        image_count: int,
        history_turns: int,
    ) -> Coroutine[Any, Any, RewriteResult]:
        # Not a coroutine itself: without a tracer the rewrite is awaited as it is,
        # with no extra frame on the hot path.
        if self._tracer is None:
            return run
        return self._tracer.trace(
            run, on_error=policy, image_count=image_count, history_turns=history_turns
        )

    @staticmethod
    async def _refuse_unbuilt(
        given: object, error: InputError, policy: FailurePolicyName, started: float
    ) -> RewriteResult:
        if not isinstance(given, str):
            # Without a text there is nothing the policy could shield, block or pass on.
            raise error
        return apply_failure_policy(policy, given, error, latency_ms=_elapsed_ms(started))

    async def _run_untraced(
        self,
        request: RewriteRequest,
        policy: FailurePolicyName,
        started: float,
        *,
        raise_input_errors: bool,
    ) -> RewriteResult:
        usage: list[Usage] = []
        raw: list[str] = []
        checked: list[bool] = []
        reservation = self.decode_pool.reservation()
        try:
            # One deadline for the whole rewrite: loading images, generating and parsing.
            result, key = await _within(
                self._rewrite_steps(request, started, usage, raw, reservation, checked),
                self.timeout_s,
            )
        except InputError as error:
            if raise_input_errors:
                raise
            return self._policy_result(policy, request, error, started, usage, raw)
        except VLMGuardError as error:
            return self._policy_result(policy, request, error, started, usage, raw)
        except asyncio.TimeoutError:
            if raise_input_errors and not checked:
                # The deadline passed while the images were still being read: they were
                # never checked, so they must not be forwarded under a fallback prompt.
                raise InputCheckTimeoutError(
                    f"the request's images could not be read and checked within {self.timeout_s} s"
                ) from None
            timeout = BackendTimeoutError(f"the rewrite did not finish within {self.timeout_s} s")
            return self._policy_result(policy, request, timeout, started, usage, raw)
        finally:
            reservation.release()
        if key is not None and not result.cached:
            self.cache.put(key, result)  # type: ignore[union-attr]
        return result

    async def _rewrite_steps(
        self,
        request: RewriteRequest,
        started: float,
        usage: list[Usage],
        raw: list[str],
        reservation: Reservation,
        checked: list[bool],
    ) -> tuple[RewriteResult, str | None]:
        prepared = await self._prepare(request, reservation)
        # Every input check has passed (text, history, each image loaded and decoded
        # within the limits): a speculating caller may now send the original.
        checked.append(True)
        report_inputs_checked()
        if self._tracer is not None:
            self._tracer.record_images(prepared)
        key = cache_key(request.text, prepared, request.history) if self.cache is not None else None
        if key is not None and (hit := self.cache.get(key)) is not None:  # type: ignore[union-attr]
            return hit.model_copy(update={"cached": True, "latency_ms": _elapsed_ms(started)}), key
        generation = await self._generate(request, prepared)
        usage.append(
            Usage(
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            )
        )
        raw.append(generation.text)
        if len(generation.text) <= PARSE_INLINE_MAX_CHARS:
            result = self._to_result(request.text, generation, usage[0], started)
        else:
            result = await asyncio.to_thread(
                self._to_result, request.text, generation, usage[0], started
            )
        return result, key

    @staticmethod
    def _policy_result(
        policy: FailurePolicyName,
        request: RewriteRequest,
        error: VLMGuardError,
        started: float,
        usage: list[Usage],
        raw: list[str],
    ) -> RewriteResult:
        return apply_failure_policy(
            policy,
            request.text,
            error,
            latency_ms=_elapsed_ms(started),
            usage=usage[0] if usage else None,
            raw=raw[0] if raw else None,
        )

    def rewrite(
        self,
        request: RewriteRequest | str,
        images: Sequence[Any] | None = None,
        *,
        history: Sequence[HistoryTurn | dict[str, str]] | None = None,
        on_error: FailurePolicyName | None = None,
    ) -> RewriteResult:
        """Synchronous :meth:`arewrite` (safe to call from inside a running event loop)."""
        return self._sync.run(self.arewrite(request, images, history=history, on_error=on_error))

    async def arewrite_batch(
        self,
        requests: Sequence[RewriteRequest | str],
        *,
        on_error: FailurePolicyName | None = None,
    ) -> list[RewriteResult]:
        """Rewrite many requests concurrently (bounded by ``max_concurrency``), in order."""
        return list(await asyncio.gather(*(self.arewrite(r, on_error=on_error) for r in requests)))

    def rewrite_batch(
        self,
        requests: Sequence[RewriteRequest | str],
        *,
        on_error: FailurePolicyName | None = None,
    ) -> list[RewriteResult]:
        """Synchronous :meth:`arewrite_batch`."""
        return self._sync.run(self.arewrite_batch(requests, on_error=on_error))

    async def aclose(self) -> None:
        """Close the backend."""
        await self.backend.aclose()

    def close(self) -> None:
        """Close the backend and the private loop used by the synchronous methods."""
        self._sync.run(self.aclose())
        self._sync.stop()

    def __enter__(self) -> Rewriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ------------------------------------------------------------------------

    def _as_request(
        self,
        request: RewriteRequest | str,
        images: Sequence[Any] | None,
        history: Sequence[HistoryTurn | dict[str, str]] | None,
    ) -> RewriteRequest:
        if isinstance(request, RewriteRequest):
            if images or history:
                raise ConfigurationError(
                    "pass images and history inside the RewriteRequest, not alongside it"
                )
            return request
        if not isinstance(request, str):
            raise InputError(
                "the text to rewrite must be a string or a RewriteRequest, not "
                f"{type(request).__name__}"
            )
        try:
            return RewriteRequest(
                text=request,
                images=list(images or []),
                history=list(history or []),  # type: ignore[arg-type]  # dicts are validated
            )
        except ValidationError as exc:
            raise InputError(f"invalid rewrite request: {exc.errors()[0]['msg']}") from exc

    async def _prepare(
        self, request: RewriteRequest, reservation: Reservation | None = None
    ) -> list[PreparedImage]:
        if len(request.history) > self.max_history_turns:
            raise TextTooLongError(
                f"{len(request.history)} history turns, over the limit of "
                f"{self.max_history_turns} (max_history_turns)"
            )
        history_images = sum(turn.images for turn in request.history)
        if history_images > len(request.images):
            raise InputError(
                f"the history counts {history_images} images but the request holds "
                f"{len(request.images)}"
            )
        total = len(request.text) + sum(len(turn.text) for turn in request.history)
        if total > self.max_text_chars:
            raise TextTooLongError(
                f"the text and history are {total} characters, over the limit of "
                f"{self.max_text_chars}"
            )
        if not request.images:
            return []
        kwargs: dict[str, Any] = {
            "limits": self.image_limits,
            "url_policy": self.url_policy,
            "allow_local_files": request.allow_local_files,
        }
        if not all(_cheap_to_load(image) for image in request.images):
            # Reading files, fetching URLs and parsing large encodings block: all of it,
            # decoding included, runs in a thread so the event loop stays free.
            return await asyncio.to_thread(self._load_reserved, request, kwargs, reservation)
        # Headers are cheap to read here, and every limit (the request's decode budget
        # too) is checked before anything is decoded.  Decoding costs what the pixels
        # cost, not what the bytes do: a few kilobytes can declare 50 megapixels.
        opened = open_images(request.images, **kwargs)
        if opened.pixels_to_decode <= INLINE_DECODE_MAX_PIXELS:
            return opened.decode()
        return await asyncio.to_thread(self._decode_reserved, opened, reservation)

    def _load_reserved(
        self, request: RewriteRequest, kwargs: dict[str, Any], reservation: Reservation | None
    ) -> list[PreparedImage]:
        return self._decode_reserved(open_images(request.images, **kwargs), reservation)

    def _decode_reserved(
        self, opened: OpenedImages, reservation: Reservation | None
    ) -> list[PreparedImage]:
        # Runs in a worker thread: waiting for room in the process-wide pool never
        # blocks the event loop, and the rewrite's deadline bounds the wait.
        if reservation is not None:
            reservation.acquire(opened.decoded_bytes, self.timeout_s)
        return opened.decode()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.max_concurrency)
            self._semaphores[loop] = semaphore
        return semaphore

    async def _generate(self, request: RewriteRequest, images: list[PreparedImage]) -> Generation:
        generation_request = GenerationRequest(
            messages=build_messages(request.text, images, request.history, self.system_prompt),
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            stop=[STOP_SEQUENCE],
        )
        async with self._semaphore():
            try:
                return await self.backend.agenerate(generation_request)
            except VLMGuardError:
                raise  # the backend's own typed error (its own timeout included) as it is
            except asyncio.CancelledError:
                raise  # the rewrite's deadline (or the caller) cancelled the call
            except asyncio.TimeoutError as exc:
                raise BackendTimeoutError(f"the rewriter backend timed out: {exc!r}") from exc
            except Exception as exc:  # a third-party backend's own error type
                raise BackendError(f"the rewriter backend failed: {exc!r}") from exc

    def _to_result(
        self, original: str, generation: Generation, usage: Usage, started: float
    ) -> RewriteResult:
        parsed = parse_output(generation.text)
        rewrite = parsed.rewrite  # None: the model answered with the <unchanged/> marker
        unchanged = (
            rewrite is None
            or _same_text(rewrite, original)
            or _same_text(rewrite, neutralise_tags(original))
        )
        if unchanged and parsed.risk is None:
            # No verdict the contract knows ("very high", "critical", none at all): calling
            # the request safe would invent one, and forwarding it unchanged would fail open.
            raise RewriteParseError(
                "the rewriter returned the request unchanged without a risk verdict "
                "(none, low, medium or high)",
                raw=generation.text,
            )
        if unchanged and parsed.risk is not None and parsed.risk >= Risk.MEDIUM:
            # Forwarding the user's own text under a medium or high verdict would fail open,
            # whether the model copied the text or answered with the marker.
            raise ContractViolationError(
                f"the rewriter judged the request {parsed.risk.value} risk but returned it "
                "unchanged",
                raw=generation.text,
            )
        prompt = original if unchanged or rewrite is None else rewrite
        # A rewrite without a verdict is still a rewrite, but its risk is unknown.
        risk = parsed.risk
        return RewriteResult(
            prompt=prompt,
            original=original,
            analysis=parsed.analysis,
            risk=risk,
            changed=not unchanged,
            action="unchanged" if unchanged else "rewrite",
            latency_ms=_elapsed_ms(started),
            usage=usage,
            raw=generation.text,
        )


INLINE_DECODE_MAX_BYTES = 48 * 1024
"""Encoded images up to this size have their headers read on the event loop (larger ones,
with their base64 and entropy decoding, go to a thread whatever their pixel count)."""

INLINE_DECODE_MAX_PIXELS = 1024 * 1024
"""A request whose images need decoding or converting of at most this many pixels in all
is decoded on the event loop: under many concurrent requests a thread hop costs more than
decoding a small image, while a large one (whatever its byte size) would stall the loop."""


def _cheap_to_load(source: Any) -> bool:
    """Whether ``source``'s header can be read on the event loop (no I/O, small encoding)."""
    if isinstance(source, (PreparedImage, Image.Image)):
        return True
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source) <= INLINE_DECODE_MAX_BYTES
    if isinstance(source, str) and source[:5].lower() == "data:":
        return len(source) <= INLINE_DECODE_MAX_BYTES * 4 // 3 + 64
    return False  # paths and URLs: file or network I/O


async def _within(coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
    """Await ``coroutine`` under one deadline (``TimeoutError`` past it).

    ``asyncio.timeout`` (Python 3.11+) runs the coroutine in the caller's task, where
    ``wait_for`` wraps it in a task of its own: that costs more than the rest of a
    cached or text-only rewrite.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await coroutine
    return await asyncio.wait_for(coroutine, timeout)


def _count(given: object) -> int:
    """How many items a caller's ``images`` or ``history`` held (0 when not a collection)."""
    return len(given) if isinstance(given, Sized) else 0


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


__all__ = [
    "INLINE_DECODE_MAX_BYTES",
    "INLINE_DECODE_MAX_PIXELS",
    "PARSE_INLINE_MAX_CHARS",
    "Rewriter",
]
