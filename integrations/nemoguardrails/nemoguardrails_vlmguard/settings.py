"""The rail's settings: the ``custom_data: vlmguard:`` section of a user's ``config.yml``.

Example::

    custom_data:
      vlmguard:
        backend: openai                  # or transformers, or any registered backend
        model: vlmguard-r1
        base_url: http://localhost:8000/v1
        on_error: shield                 # shield | raise | passthrough | block
        timeout_s: 30
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlmguard_plugins import Rewriter, URLPolicy, load_backend
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.types import FailurePolicyName

SETTINGS_KEY = "vlmguard"
"""The key under ``custom_data`` that holds the rail's settings."""


class VLMGuardSettings(BaseModel):
    """How the rail builds its :class:`~vlmguard_plugins.Rewriter`.

    Attributes:
        backend: the backend name given to :func:`vlmguard_plugins.load_backend`.
        model: the rewriter model (a hub id or folder for ``transformers``, the served
            model name for ``openai``).
        base_url: the OpenAI-compatible server's URL, or a list of replicas (``openai``
            backend).
        backend_options: further keyword arguments for the backend.
        on_error: the failure policy; ``block`` makes the rail refuse.
        timeout_s: time limit for one rewrite; past it the failure policy applies.
        max_concurrency / cache_size / max_new_tokens: passed to the Rewriter.
        allow_remote_images: let the rewriter fetch http(s) image URLs found in user
            messages (public addresses only); off by default, so such images go to the
            failure policy instead.
        allowed_image_hosts: when set, the only hosts images may be fetched from.
        use_history: give the rewriter the earlier turns of the conversation.
    """

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None
    base_url: str | list[str] | None = None
    backend_options: dict[str, Any] = Field(default_factory=dict)
    on_error: FailurePolicyName = "shield"
    timeout_s: float | None = 60.0
    max_concurrency: int = Field(default=16, ge=1)
    cache_size: int = Field(default=0, ge=0)
    max_new_tokens: int = Field(default=512, ge=1)
    allow_remote_images: bool = False
    allowed_image_hosts: list[str] = Field(default_factory=list)
    use_history: bool = True

    @classmethod
    def from_custom_data(cls, custom_data: dict[str, Any] | None) -> VLMGuardSettings:
        """Read the ``vlmguard`` section of ``custom_data``; a clear error when missing or wrong."""
        section = (custom_data or {}).get(SETTINGS_KEY)
        if section is None:
            raise ConfigurationError(
                "config.yml has no 'custom_data: vlmguard:' section; add one with at least "
                "'backend' (and usually 'model'), or pass a Rewriter to register(app, rewriter=...)"
            )
        if not isinstance(section, dict):
            raise ConfigurationError("'custom_data: vlmguard:' must be a mapping of settings")
        try:
            return cls.model_validate(section)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'vlmguard'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigurationError(
                f"invalid 'custom_data: vlmguard:' settings: {problems}"
            ) from exc

    def backend_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for :func:`~vlmguard_plugins.load_backend`."""
        kwargs = dict(self.backend_options)
        if self.model is not None:
            kwargs["model"] = self.model
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return kwargs

    def build_rewriter(self) -> Rewriter:
        """Load the backend and build the Rewriter these settings describe."""
        return Rewriter(
            backend=load_backend(self.backend, **self.backend_kwargs()),
            on_error=self.on_error,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            cache_size=self.cache_size,
            max_new_tokens=self.max_new_tokens,
            url_policy=URLPolicy(
                allow_remote=self.allow_remote_images,
                allowed_hosts=frozenset(self.allowed_image_hosts),
            ),
        )
