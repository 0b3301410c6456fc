"""``RewriterSettings``: one settings model that builds the Rewriter for every entry point.

The CLI, the gateway, the benchmark harness and the three framework adapters (NeMo
Guardrails' ``custom_data: vlmguard:``, the LangChain and LlamaIndex constructors)
all describe their rewriter with these fields, under these names::

    from vlmguard_plugins import RewriterSettings

    rewriter = RewriterSettings(
        backend="openai", model="vlmguard-r1", base_url="http://localhost:8000/v1",
        on_error="block", timeout_s=10,
    ).build()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigurationError
from .images import DEFAULT_FORMATS, ImageLimits
from .prompts import SYSTEM_PROMPT
from .rewriter import Rewriter
from .telemetry import Telemetry
from .types import HISTORY_TURNS_CAP, MAX_HISTORY_TURNS, FailurePolicyName, HistoryOverflow
from .urls import URLPolicy

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

DEFAULT_REWRITER_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
"""The model a rewriter uses when none is named (a hub id for ``transformers``)."""

_BACKENDS_WITH_DEFAULT_MODEL = frozenset({"transformers"})


class RewriterSettings(BaseModel):
    """Everything that describes a :class:`~vlmguard_plugins.Rewriter`, by name.

    Attributes:
        backend: ``transformers``, ``openai``, or any installed backend.
        model: the rewriter model: a hub id or local folder (``transformers``), the
            served model name (``openai``, required); for ``transformers`` it defaults to
            :data:`DEFAULT_REWRITER_MODEL`.
        base_url: the OpenAI-compatible server's URL, or a list of replicas.
        api_key: the rewriter server's key (``openai``).
        backend_options: further keyword arguments for the backend.
        on_error: the failure policy: ``shield``, ``raise``, ``passthrough`` or ``block``.
        timeout_s: time limit for one rewrite (images, backend call, parsing).
        max_concurrency: most backend calls in flight at once.
        cache_size: results kept in an LRU cache (0: no cache).
        max_text_chars: longest accepted text (the request plus its history).
        max_new_tokens / temperature: generation settings.
        system_prompt: replace the zero-shot system prompt (for a fine-tuned rewriter).
        max_images / max_image_bytes / max_image_pixels / max_image_side: image limits
            (``max_images`` counts every image of the conversation).
        max_total_image_pixels / max_decoded_image_bytes: the decode budget of one
            request, over every image of the conversation, checked from the headers
            before any image is decoded (see :class:`~vlmguard_plugins.ImageLimits`).
        allow_animated_images: accept animated images, judged by their first frame
            (refused by default: the model would receive the other frames unseen).
        allow_remote_images: let the rewriter fetch http(s) image URLs (public
            addresses only); off by default, so such images are refused.
        allowed_image_hosts: when set, the only hosts images may be fetched from.
        allow_private_image_addresses: allow image hosts on private networks.
        image_fetch_timeout_s: time limit for one image download.
        unsupported_content: a message part the guard cannot check (audio, video, a
            file): ``refuse`` the request (default) or ``drop`` the part.
        max_history_turns: the most other turns the rewriter reads with a request.
        history_overflow: more history than that (or than ``max_text_chars``):
            ``refuse`` (default) or ``trim`` the oldest text from what the rewriter
            reads (it still reaches the model, unread; images are always read).
        capture_message_content: record the user's text and the rewrite on the
            rewrite's OpenTelemetry span; ``None`` (default) follows
            ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (off unless set).
    """

    model_config = ConfigDict(extra="forbid")

    backend: str = "transformers"
    model: str | None = None
    base_url: str | list[str] | None = None
    api_key: SecretStr | None = None
    backend_options: dict[str, Any] = Field(default_factory=dict)
    on_error: FailurePolicyName = "shield"
    timeout_s: float | None = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)
    cache_size: int = Field(default=0, ge=0)
    max_text_chars: int = Field(default=16_000, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    system_prompt: str | None = None
    max_images: int = Field(default=8, ge=0)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_image_side: int = Field(default=16_384, ge=1)
    max_total_image_pixels: int = Field(default=64_000_000, ge=1)
    max_decoded_image_bytes: int = Field(default=384 * 1024 * 1024, ge=1)
    allow_animated_images: bool = False
    allow_remote_images: bool = False
    allowed_image_hosts: list[str] = Field(default_factory=list)
    allow_private_image_addresses: bool = False
    image_fetch_timeout_s: float = Field(default=10.0, gt=0)
    unsupported_content: Literal["refuse", "drop"] = "refuse"
    max_history_turns: int = Field(default=MAX_HISTORY_TURNS, ge=0, le=HISTORY_TURNS_CAP)
    history_overflow: HistoryOverflow = "refuse"
    capture_message_content: bool | None = None

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any] | None, *, where: str = "rewriter settings"
    ) -> RewriterSettings:
        """Validate a mapping (a YAML section, keyword arguments) into settings.

        Raises:
            ConfigurationError: naming every invalid or unknown setting and ``where``
                it was found.
        """
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigurationError(f"invalid {where}: {describe_errors(exc, cls)}") from exc

    @classmethod
    def from_options(
        cls, backend: str, options: Mapping[str, Any] | None = None, *, where: str = ""
    ) -> RewriterSettings:
        """Settings from a backend name and flat keyword options (``model=..., timeout_s=...``).

        Options named like a setting set it; any other option is a backend option
        (passed to :func:`~vlmguard_plugins.load_backend`), so
        ``from_options("openai", {"model": "m", "max_retries": 2, "timeout_s": 5})`` works.
        """
        known: dict[str, Any] = {"backend": backend}
        extra: dict[str, Any] = {}
        for name, value in (options or {}).items():
            (known if name in cls.model_fields else extra)[name] = value
        if extra:
            known["backend_options"] = {**dict(known.get("backend_options") or {}), **extra}
        return cls.from_mapping(known, where=where or f"settings of the {backend!r} rewriter")

    def backend_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for :func:`~vlmguard_plugins.load_backend`."""
        kwargs = dict(self.backend_options)
        if self.model is not None:
            kwargs["model"] = self.model
        elif self.backend in _BACKENDS_WITH_DEFAULT_MODEL:
            kwargs.setdefault("model", DEFAULT_REWRITER_MODEL)
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        return kwargs

    def image_limits(self) -> ImageLimits:
        """The core's image limits."""
        return ImageLimits(
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
            max_side=self.max_image_side,
            max_images=self.max_images,
            formats=DEFAULT_FORMATS,
            max_total_pixels=self.max_total_image_pixels,
            max_decoded_bytes=self.max_decoded_image_bytes,
            allow_animated=self.allow_animated_images,
        )

    def url_policy(self) -> URLPolicy:
        """The core's URL policy for image sources."""
        return URLPolicy(
            allow_remote=self.allow_remote_images,
            allow_private_addresses=self.allow_private_image_addresses,
            allowed_hosts=frozenset(host.lower() for host in self.allowed_image_hosts),
            max_bytes=self.max_image_bytes,
            timeout_s=self.image_fetch_timeout_s,
        )

    def rewriter_options(self, *, tracer_provider: TracerProvider | None = None) -> dict[str, Any]:
        """The keyword arguments for :class:`~vlmguard_plugins.Rewriter` besides the backend.

        ``tracer_provider`` is the OpenTelemetry provider the rewriter's spans go to
        (``None``: the global one); see :class:`~vlmguard_plugins.telemetry.Telemetry`.
        """
        return {
            "on_error": self.on_error,
            "timeout_s": self.timeout_s,
            "max_concurrency": self.max_concurrency,
            "cache_size": self.cache_size,
            "max_text_chars": self.max_text_chars,
            "image_limits": self.image_limits(),
            "url_policy": self.url_policy(),
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "system_prompt": self.system_prompt or SYSTEM_PROMPT,
            "unsupported_content": self.unsupported_content,
            "max_history_turns": self.max_history_turns,
            "history_overflow": self.history_overflow,
            "telemetry": Telemetry(
                tracer_provider=tracer_provider,
                capture_message_content=self.capture_message_content,
            ),
        }

    def build(self, *, tracer_provider: TracerProvider | None = None) -> Rewriter:
        """Load the backend and build the Rewriter these settings describe.

        ``tracer_provider`` is the OpenTelemetry provider for the rewriter's spans
        (``None``: the global one, looked up when a span starts).

        Raises:
            ConfigurationError: an unknown backend or invalid backend options.
            ModelNotFoundError: the model's weights cannot be found.
        """
        from .backends import load_backend

        return Rewriter(
            load_backend(self.backend, **self.backend_kwargs()),
            **self.rewriter_options(tracer_provider=tracer_provider),
        )


def describe_errors(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Pydantic's errors as one line a person reads: ``field: problem; ...``.

    An unknown key lists the known ones (``model``'s fields, RewriterSettings' by default).
    """
    known = (model or RewriterSettings).model_fields
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown setting (known: {', '.join(known)})"
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


__all__ = ["DEFAULT_REWRITER_MODEL", "RewriterSettings", "describe_errors"]
