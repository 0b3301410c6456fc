"""Gateway settings: from command-line options, ``VLMGUARD_GATEWAY_*`` variables and defaults.

Precedence is the usual one: an explicit value (a ``vlmguard serve`` option or a
keyword argument) wins over the environment, which wins over the default.  The
rewriter is described by the core's :class:`~vlmguard_plugins.RewriterSettings`,
which :meth:`GatewaySettings.rewriter_settings` fills from the ``rewriter_*``, image
and ``unsupported_content`` settings, so the gateway builds its rewriter exactly as
every other entry point does.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..errors import ConfigurationError
from ..images import ImageLimits
from ..settings import DEFAULT_REWRITER_MODEL, RewriterSettings
from ..types import FailurePolicyName
from ..urls import URLPolicy

ENV_PREFIX = "VLMGUARD_GATEWAY_"

GatewayMode = Literal["enforce", "shadow", "speculative"]
"""How the guard stands in the request path: ``enforce`` (guard, then forward the
guarded request), ``shadow`` (forward the original at once, guard beside it and only
record), ``speculative`` (forward the original while guarding, release its answer only
when the guard leaves the request as it is)."""

CommaList = Annotated[list[str], NoDecode]


def is_loopback_host(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class GatewaySettings(BaseSettings):
    """Everything ``vlmguard serve`` can be told.

    Each field can also be set with an environment variable named
    ``VLMGUARD_GATEWAY_`` + the field name in upper case, for example
    ``VLMGUARD_GATEWAY_UPSTREAM_URL``.  List fields take comma-separated values.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")
    # One pydantic Field per setting (its bounds and help): alike in shape, not duplicates.

    # -- the VLM behind the gateway ----------------------------------------------------
    upstream_url: str = Field(
        description="Base URL of the OpenAI-compatible VLM server, e.g. http://localhost:8000/v1."
    )
    upstream_api_key: SecretStr | None = Field(
        default=None, description="Key the gateway sends to the upstream; never sent to clients."
    )
    upstream_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest wait for the upstream between two bytes."
    )
    upstream_connect_timeout_s: float = Field(default=10.0, gt=0)
    upstream_max_connections: int = Field(
        default=1000, ge=1, description="Connections to the upstream at most, all pools together."
    )
    upstream_clients: int = Field(
        default=8,
        ge=1,
        description="Connection pools the upstream connections are spread over (each request "
        "takes the next in turn); small pools keep httpx's per-request bookkeeping cheap.",
    )

    # -- the rewriter ------------------------------------------------------------------
    rewriter_backend: str = Field(
        default="transformers", description="transformers, openai, or an installed backend."
    )
    rewriter_model: str | None = Field(
        default=None,
        description=f"Rewriter model id or folder; {DEFAULT_REWRITER_MODEL} for the "
        "transformers and openai backends when not set.",
    )
    rewriter_base_url: str | None = Field(
        default=None, description="Server of the rewriter model (for rewriter_backend=openai)."
    )
    rewriter_api_key: SecretStr | None = None
    rewriter_timeout_s: float = Field(default=60.0, gt=0)
    rewriter_max_concurrency: int = Field(default=16, ge=1)
    rewriter_max_new_tokens: int = Field(default=512, ge=1)
    rewriter_max_text_chars: int = Field(
        default=16_000,
        ge=1,
        description="Longest text the rewriter reads: the user's message and the earlier "
        "turns together (a longer conversation is refused unless history_overflow=trim).",
    )
    rewriter_max_history_turns: int = Field(
        default=32, ge=0, description="The most earlier turns the rewriter reads."
    )
    history_overflow: Literal["refuse", "trim"] = Field(
        default="refuse",
        description="More history than the rewriter reads: refuse the request, or trim the "
        "oldest text from what the rewriter reads (it still reaches the VLM, unread).",
    )
    on_error: FailurePolicyName = Field(
        default="shield", description="Failure policy: shield, raise, passthrough or block."
    )
    unsupported_content: Literal["refuse", "drop"] = Field(
        default="refuse",
        description="A message part the guard cannot check (audio, video, a file, an unknown "
        "type): refuse the request with a 400, or drop the part before forwarding.",
    )
    expose_analysis: bool = Field(
        default=False, description="Add the rewriter's risk and analysis to every response."
    )

    # -- rollout mode and audit ------------------------------------------------------------
    mode: GatewayMode = Field(
        default="enforce",
        description="enforce: guard, then forward the guarded request; shadow: forward the "
        "original at once and only record what the guard would have done; speculative: "
        "call the upstream with the original while guarding, release its answer only when "
        "the guard leaves the request unchanged, else send the guarded request.",
    )
    shadow_max_concurrency: int = Field(
        default=16,
        ge=1,
        description="Shadow rewrites in flight at most; past it a request is recorded as "
        "skipped instead of queued.",
    )
    speculative_max_held_chunks: int = Field(
        default=256,
        ge=1,
        description="Upstream stream reads held before the guard's verdict at most; past it "
        "the upstream is not read (backpressure) until the verdict.",
    )
    audit_log: str | None = Field(
        default=None,
        description="File to append the audit log to (one JSON line per guard decision); "
        "'-' writes it to standard output.",
    )
    audit_include_text: bool = Field(
        default=False,
        description="Also write the user's text, the rewrite, the analysis and shadow diffs "
        "to the audit log (they may hold personal data).",
    )

    # -- tracing -----------------------------------------------------------------------
    capture_message_content: bool | None = Field(
        default=None,
        description="Record the user's text, the rewrite and the analysis on each rewrite's "
        "OpenTelemetry span (they may hold personal data); unset follows "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (off unless set).",
    )

    # -- listening and security --------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    client_api_keys: CommaList = Field(
        default_factory=list,
        description="Keys clients must send as 'Authorization: Bearer KEY'. Without any, "
        "the gateway only listens on a loopback address.",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="Origins allowed by CORS; empty means CORS is off."
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_concurrent_requests: int | None = Field(
        default=None, ge=1, description="Answer 503 past this many API requests in flight."
    )
    graceful_shutdown_s: float = Field(
        default=30.0, ge=0, description="On shutdown, wait this long for requests in flight."
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Gateway processes sharing the port (each with its own rewriter, "
        "upstream pools and metrics).",
    )

    # -- images (the core's limits) ------------------------------------------------------
    max_images: int = Field(default=8, ge=0)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=50_000_000, ge=1)
    max_image_side: int = Field(default=16_384, ge=1)
    max_total_image_pixels: int = Field(
        default=64_000_000, ge=1, description="Pixels of all the images of one request."
    )
    max_decoded_image_bytes: int = Field(
        default=384 * 1024 * 1024,
        ge=1,
        description="Memory the images of one request may take once decoded (estimated "
        "from their headers, before decoding).",
    )
    allow_animated_images: bool = Field(
        default=False,
        description="Accept animated images, judged by their first frame (the VLM may read "
        "every frame).",
    )
    allow_remote_images: bool = Field(
        default=False, description="Let the rewriter fetch http(s) image URLs (public hosts)."
    )
    allowed_image_hosts: CommaList = Field(default_factory=list)

    @field_validator("client_api_keys", "cors_origins", "allowed_image_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("the upstream URL must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _keys_or_loopback(self) -> GatewaySettings:
        if not self.client_api_keys and not is_loopback_host(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without client API keys: set "
                f"--api-key (or {ENV_PREFIX}CLIENT_API_KEYS), or listen on 127.0.0.1"
            )
        return self

    @classmethod
    def load(cls, **overrides: Any) -> GatewaySettings:
        """Settings from ``overrides`` (None values are ignored) over the environment.

        Raises:
            ConfigurationError: naming every invalid or missing setting.
        """
        from pydantic import ValidationError

        given = {name: value for name, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            raise ConfigurationError(f"invalid gateway settings: {problems}") from exc

    def environment(self) -> dict[str, str]:
        """These settings as ``VLMGUARD_GATEWAY_*`` variables, for :meth:`load` in another process.

        Every field is included except those that are None (their variables must be
        unset, see :meth:`unset_environment`).  Secrets are in clear: put the result
        in a process's environment, never in a log.

        Raises:
            ConfigurationError: a list item holds a comma, which a variable cannot carry.
        """
        variables: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, list):
                if any("," in item for item in value):
                    raise ConfigurationError(
                        f"{name}: an item holds a comma, which {ENV_PREFIX}{name.upper()} "
                        "cannot carry"
                    )
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            variables[f"{ENV_PREFIX}{name.upper()}"] = text
        return variables

    def unset_environment(self) -> list[str]:
        """The ``VLMGUARD_GATEWAY_*`` variables to remove so :meth:`load` reads None."""
        return [
            f"{ENV_PREFIX}{name.upper()}"
            for name in type(self).model_fields
            if getattr(self, name) is None
        ]

    def rewriter_settings(self) -> RewriterSettings:
        """The core's settings for the rewriter these settings describe.

        Private image hosts are never allowed: the gateway's images come from clients.

        Raises:
            ConfigurationError: a value the core's settings refuse.
        """
        return RewriterSettings.from_mapping(
            {
                "backend": self.rewriter_backend,
                "model": self.rewriter_model,
                "base_url": self.rewriter_base_url,
                "api_key": self.rewriter_api_key,
                "on_error": self.on_error,
                "timeout_s": self.rewriter_timeout_s,
                "max_concurrency": self.rewriter_max_concurrency,
                "max_new_tokens": self.rewriter_max_new_tokens,
                "max_text_chars": self.rewriter_max_text_chars,
                "max_history_turns": self.rewriter_max_history_turns,
                "history_overflow": self.history_overflow,
                "max_images": self.max_images,
                "max_image_bytes": self.max_image_bytes,
                "max_image_pixels": self.max_image_pixels,
                "max_image_side": self.max_image_side,
                "max_total_image_pixels": self.max_total_image_pixels,
                "max_decoded_image_bytes": self.max_decoded_image_bytes,
                "allow_animated_images": self.allow_animated_images,
                "allow_remote_images": self.allow_remote_images,
                "allowed_image_hosts": self.allowed_image_hosts,
                "allow_private_image_addresses": False,
                "unsupported_content": self.unsupported_content,
                "capture_message_content": self.capture_message_content,
            },
            where="gateway rewriter settings",
        )

    def image_limits(self) -> ImageLimits:
        """The core's image limits from these settings."""
        return self.rewriter_settings().image_limits()

    def url_policy(self) -> URLPolicy:
        """The core's URL policy from these settings (private addresses are never allowed)."""
        return self.rewriter_settings().url_policy()


def _describe(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{name} is required (set {ENV_PREFIX}{name.upper()} or its option)"
    return f"{name}: {message}" if name else message


__all__ = ["ENV_PREFIX", "GatewayMode", "GatewaySettings", "is_loopback_host"]
