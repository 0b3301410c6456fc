"""What can go wrong with one request to the test :class:`ChatCompletionServer`.

Inject a fault with ``server.inject(fault, times=n)``; the next ``n`` chat requests get
it (``times=None``: every one, until ``server.clear_faults()``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BrokenStream",
    "ErrorStatus",
    "Fault",
    "HeldStream",
    "MalformedJSON",
    "RateLimited",
    "ServerError",
    "SlowAnswer",
    "Unauthorized",
]


@dataclass(frozen=True)
class Fault:
    """Something that goes wrong with one chat-completion request."""


@dataclass(frozen=True)
class ErrorStatus(Fault):
    """Answer with ``status`` and an OpenAI-style error body.

    ``type`` defaults to what the OpenAI API sends with that status.
    """

    status: int
    message: str = "scripted failure"
    type: str | None = None


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


@dataclass(frozen=True)
class BrokenStream(Fault):
    """Drop the connection of a ``stream=True`` answer after ``after_chunks`` pieces."""

    after_chunks: int = 1


@dataclass(frozen=True)
class HeldStream(Fault):
    """After the first streamed piece, hold the rest until ``server.release`` is set.

    Proves that a client (or a proxy in between) got the first piece before the rest
    existed.  The hold ends after ``timeout_s`` in any case;
    ``server.released_in_time`` tells which happened.
    """

    timeout_s: float = 10.0
