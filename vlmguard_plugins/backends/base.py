"""The backend protocol: how the rewriter talks to a model, whatever serves it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..images import PreparedImage

__all__ = [
    "STOP_SEQUENCE",
    "Backend",
    "Generation",
    "GenerationRequest",
    "truncate_after_stop",
]

STOP_SEQUENCE = "</rewrite>"


@dataclass
class GenerationRequest:
    """One chat to complete.

    ``messages`` are role/content dicts whose content is a list of parts:
    ``{"type": "text", "text": ...}`` or ``{"type": "image", "image": PreparedImage}``.

    Sampling: ``temperature`` 0 decodes greedily; above 0 it samples, keeping the
    smallest set of tokens whose probability reaches ``top_p`` (None: the model's or
    the server's default).  ``seed`` makes sampling reproducible: the same seed gives
    the same answer (a local backend generates a seeded request alone; a server
    honours it as far as it supports seeds).
    """

    messages: list[dict[str, Any]]
    max_new_tokens: int = 512
    temperature: float = 0.0
    stop: list[str] = field(default_factory=lambda: [STOP_SEQUENCE])
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigurationError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def images(self) -> list[PreparedImage]:
        """The images of every message, in order."""
        return [
            part["image"]
            for message in self.messages
            for part in message["content"]
            if part.get("type") == "image"
        ]


@dataclass
class Generation:
    """A backend's answer to one :class:`GenerationRequest`."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Backend(Protocol):
    """What a rewriter backend implements.

    ``agenerate`` may be called concurrently; a backend that batches (the
    transformers backend) gathers concurrent calls itself, a remote one sends them
    concurrently.  Errors are raised as :class:`vlmguard_plugins.errors.BackendError`.
    """

    name: str

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """Complete one chat."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or memory."""
        ...


def truncate_after_stop(text: str, stop: list[str]) -> str:
    """Cut ``text`` just after the first stop sequence (kept, so the contract stays whole)."""
    cut = len(text)
    for sequence in stop:
        index = text.find(sequence)
        if index != -1:
            cut = min(cut, index + len(sequence))
    return text[:cut]
