"""OpenTelemetry spans for rewrites (the optional ``otel`` extra).

Every rewrite, whatever the entry point (``rewrite``, ``arewrite``, ``guard``, the
adapters, the gateway), becomes one span named ``apply_guardrail vlmguard`` that
follows the OpenTelemetry GenAI semantic conventions, with the guard's own outcome
under ``vlmguard.*``.  The span is started in the current context, so it nests under
the caller's span (a web request, a LangChain or LlamaIndex run) when there is one.

Only ``opentelemetry-api`` is needed: an application that configures the SDK (a
``TracerProvider`` with an exporter) gets the spans, one that does not gets the API's
no-op spans.  Without the package installed the rewriter skips this module's work.

What the user wrote and what the rewriter answered are recorded only when content
capture is switched on, by :attr:`Telemetry.capture_message_content` or by the GenAI
convention's ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` variable.  So are
error messages, which may quote the request (an upstream server's error body, an image
URL with its query string): without capture, the status, the ``error.type`` attribute
and the ``exception`` event name only the error class (and the failure policy that
answered).  Images are never recorded, only their SHA-256 digests.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .images import PreparedImage
from .policy import fallback_error_type
from .types import RewriteResult

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .backends.base import Backend

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI convention's switch for recording message content (off unless set)."""

SPAN_NAME = "apply_guardrail vlmguard"
"""``{gen_ai.operation.name} {gen_ai.guardrail.component.name}``, as the convention names it."""

# GenAI semantic convention attributes.  Spelled out rather than imported: the
# conventions package is not a dependency of the ``otel`` extra, and it now marks the
# GenAI names as moved to their own repository.
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_GUARDRAIL_COMPONENT_NAME = "gen_ai.guardrail.component.name"
GEN_AI_GUARDRAIL_RESULT_TYPE = "gen_ai.guardrail.result.type"
GEN_AI_GUARDRAIL_RESULT_VALUE = "gen_ai.guardrail.result.value"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"

# The guard's own attributes.
VLMGUARD_ON_ERROR = "vlmguard.on_error"
VLMGUARD_RISK = "vlmguard.risk"
VLMGUARD_ACTION = "vlmguard.action"
VLMGUARD_CHANGED = "vlmguard.changed"
VLMGUARD_CACHED = "vlmguard.cached"
VLMGUARD_FALLBACK = "vlmguard.fallback"
VLMGUARD_LATENCY_MS = "vlmguard.latency_ms"
VLMGUARD_IMAGE_COUNT = "vlmguard.image.count"
VLMGUARD_IMAGE_SHA256 = "vlmguard.image.sha256"
VLMGUARD_HISTORY_TURNS = "vlmguard.history.turns"
# Content attributes share one prefix so that a collector can drop them with one rule.
VLMGUARD_CONTENT_ORIGINAL = "vlmguard.content.original"
VLMGUARD_CONTENT_PROMPT = "vlmguard.content.prompt"
VLMGUARD_CONTENT_ANALYSIS = "vlmguard.content.analysis"

_CAPTURE_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})


@dataclass(frozen=True)
class Telemetry:
    """How a :class:`~vlmguard_plugins.Rewriter` records its rewrites as spans.

    Attributes:
        enabled: record spans (when ``opentelemetry-api`` is installed); ``False``
            switches the instrumentation off altogether.
        tracer_provider: the provider to get the tracer from; ``None`` uses the
            global one (``opentelemetry.trace.set_tracer_provider``), looked up
            lazily, so a provider configured after the rewriter was built is used.
        capture_message_content: record the user's text, the rewrite, the
            rewriter's analysis and error messages on the span.  ``None`` (default) follows
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (``true``,
            ``SPAN_ONLY`` or ``SPAN_AND_EVENT`` switch it on); otherwise off.

    Example::

        rw = Rewriter(backend, telemetry=Telemetry(capture_message_content=True))
    """

    enabled: bool = True
    tracer_provider: TracerProvider | None = None
    capture_message_content: bool | None = None

    def captures_content(self) -> bool:
        """Whether message content goes on the span (the flag, else the environment)."""
        if self.capture_message_content is not None:
            return self.capture_message_content
        return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in _CAPTURE_ON


def rewrite_tracer(telemetry: Telemetry | None, backend: Backend) -> RewriteTracer | None:
    """The tracer for a rewriter's spans, or ``None`` when there is nothing to record.

    ``None`` when ``telemetry.enabled`` is false or ``opentelemetry-api`` is not
    installed: the rewriter then does no telemetry work at all.
    """
    telemetry = telemetry or Telemetry()
    if not telemetry.enabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return RewriteTracer(
        trace.get_tracer(
            "vlmguard_plugins", _package_version(), tracer_provider=telemetry.tracer_provider
        ),
        backend,
        capture_content=telemetry.captures_content(),
    )


class RewriteTracer:
    """Opens one span per rewrite and records the outcome on it (see the module doc)."""

    def __init__(self, tracer: Tracer, backend: Backend, *, capture_content: bool) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span

        self._tracer = tracer
        self.capture_content = capture_content
        self._kind = SpanKind.INTERNAL  # in-process; a remote model call is a child span
        self._status = Status
        self._error = StatusCode.ERROR
        self._current_span = get_current_span
        self._static: dict[str, str] = {
            GEN_AI_OPERATION_NAME: "apply_guardrail",
            GEN_AI_PROVIDER_NAME: str(getattr(backend, "name", "") or "unknown"),
            GEN_AI_GUARDRAIL_COMPONENT_NAME: "vlmguard",
        }
        model = _model_name(backend)
        if model is not None:
            self._static[GEN_AI_REQUEST_MODEL] = model

    async def trace(
        self,
        run: Coroutine[Any, Any, RewriteResult],
        *,
        on_error: str,
        image_count: int,
        history_turns: int,
    ) -> RewriteResult:
        """Await ``run`` (one rewrite) inside its span.

        ``image_count`` and ``history_turns`` describe the request as it was given,
        so that a request refused before it could be built is described as well.
        """
        attributes: dict[str, Any] = {
            **self._static,
            VLMGUARD_ON_ERROR: on_error,
            VLMGUARD_IMAGE_COUNT: image_count,
            VLMGUARD_HISTORY_TURNS: history_turns,
        }
        # Exceptions are recorded here, not by the SDK: a cancelled rewrite is not an error.
        with self._tracer.start_as_current_span(
            SPAN_NAME,
            kind=self._kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await run
            except Exception as error:
                if span.is_recording():
                    self._record_error(span, error)
                raise
            if span.is_recording():
                self._record_result(span, result)
            return result

    def record_images(self, images: Sequence[PreparedImage]) -> None:
        """Put the digests of the images the rewriter read on the current rewrite span."""
        span = self._current_span()
        if images and span.is_recording():
            span.set_attribute(VLMGUARD_IMAGE_SHA256, [image.sha256 for image in images])

    def _record_error(self, span: Span, error: Exception) -> None:
        error_type = type(error).__qualname__
        span.set_attribute(ERROR_TYPE, error_type)
        if self.capture_content:
            span.record_exception(error)
            span.set_status(self._status(self._error, str(error)))
            return
        # An error's message may quote the request (an upstream server's error body, an
        # image URL with its query string), and the SDK's record_exception copies it
        # into the event twice (message and stacktrace): record the class (named as
        # the SDK names it) and the frames only.
        module = type(error).__module__
        qualified = f"{module}.{error_type}" if module and module != "builtins" else error_type
        span.add_event(
            "exception",
            {"exception.type": qualified, "exception.stacktrace": _frames_only(error)},
        )
        span.set_status(self._status(self._error, error_type))

    def _record_result(self, span: Span, result: RewriteResult) -> None:
        span.set_attributes(
            {
                VLMGUARD_RISK: result.risk_label,
                VLMGUARD_ACTION: result.action,
                VLMGUARD_CHANGED: result.changed,
                VLMGUARD_CACHED: result.cached,
                VLMGUARD_LATENCY_MS: result.latency_ms,
                GEN_AI_GUARDRAIL_RESULT_TYPE: "action",
                GEN_AI_GUARDRAIL_RESULT_VALUE: result.action,
            }
        )
        usage = result.usage
        # A cache hit consumed no tokens; zero tokens both ways means none were reported.
        if not result.cached and (usage.prompt_tokens or usage.completion_tokens):
            span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, usage.prompt_tokens)
            span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, usage.completion_tokens)
        if result.fallback is not None:
            # The rewrite failed and the failure policy answered: an error, not a verdict.
            error_type = fallback_error_type(result.fallback)
            span.set_attribute(VLMGUARD_FALLBACK, result.action)
            span.set_attribute(ERROR_TYPE, error_type)
            # The reason's message may quote the request; without content capture the
            # status names only the error class and the policy that answered.
            description = (
                result.fallback
                if self.capture_content
                else f"{error_type} (failure policy: {result.action})"
            )
            span.set_status(self._status(self._error, description))
        if self.capture_content:
            span.set_attribute(VLMGUARD_CONTENT_ORIGINAL, result.original)
            span.set_attribute(VLMGUARD_CONTENT_PROMPT, result.prompt)
            if result.analysis:
                span.set_attribute(VLMGUARD_CONTENT_ANALYSIS, result.analysis)


def _frames_only(error: BaseException) -> str:
    """The traceback of ``error`` without its message: the frames, then the class."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(error).__qualname__}"


def _model_name(backend: Backend) -> str | None:
    # The transformers backend keeps the loaded model in ``model`` and its name in
    # ``model_name``; the OpenAI-compatible one keeps the served name in ``model``.
    for attribute in ("model_name", "model"):
        value = getattr(backend, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vlmguard-plugins")
    except PackageNotFoundError:  # a source tree without installation
        return "0.0.0"


__all__ = ["CAPTURE_CONTENT_ENV", "SPAN_NAME", "RewriteTracer", "Telemetry", "rewrite_tracer"]
