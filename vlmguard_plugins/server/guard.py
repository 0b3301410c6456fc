"""The guard step of the gateway: the request's messages through the core guard.

The body's ``messages`` become the core :class:`~vlmguard_plugins.conversation.Conversation`
(:func:`~vlmguard_plugins.conversation.from_openai`), go through
:meth:`~vlmguard_plugins.Rewriter.aguard`, and come back as message dicts
(:func:`~vlmguard_plugins.conversation.to_openai`).  The gateway reads no message
content itself: what is checked, what is refused and where the rewrite goes are the
core's decisions, the same for every entry point.

Input the guard cannot check (an unsupported part, an unreadable or refused image,
a conversation over the limits) is the client's to fix: it is answered with a 400
and never forwarded.  Rewriter failures (backend errors, timeouts, unparsable output)
go to the gateway's failure policy; under ``raise`` the client gets a 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..conversation import from_openai, to_openai
from ..errors import (
    ImageInputError,
    InputError,
    TextTooLongError,
    UnsupportedContentError,
    VLMGuardError,
)
from ..rewriter import Rewriter
from ..types import FailurePolicyName, RewriteResult
from .errors import GatewayError, invalid_request
from .metrics import GatewayMetrics

logger = logging.getLogger("vlmguard_plugins.server")


@dataclass(frozen=True)
class GuardOutcome:
    """What the guard decided for one request.

    ``messages`` are the messages to forward (the rewrite written back, dropped parts
    removed); ``result`` is the rewrite; ``dropped`` lists the types of parts removed
    under ``unsupported_content="drop"``.
    """

    messages: list[dict[str, Any]]
    result: RewriteResult
    dropped: tuple[str, ...] = ()


def input_error_param(error: InputError) -> str:
    """The OpenAI-style ``param`` of a 400: the refused part's path when the core knows it."""
    if isinstance(error, UnsupportedContentError) and error.message_index is not None:
        if error.part_index is None:
            return f"messages.{error.message_index}.content"
        return f"messages.{error.message_index}.content.{error.part_index}"
    return "messages"


def input_error_code(error: InputError) -> str:
    """The OpenAI-style error ``code`` of a 400 for ``error``."""
    if isinstance(error, UnsupportedContentError):
        return "unsupported_content"
    if isinstance(error, ImageInputError):
        return "invalid_image"
    if isinstance(error, TextTooLongError):
        return "text_too_long"
    return "invalid_request"


class Guard:
    """Guards chat messages with ``rewriter`` under the gateway's failure ``policy``."""

    def __init__(
        self, rewriter: Rewriter, policy: FailurePolicyName, metrics: GatewayMetrics
    ) -> None:
        self.rewriter = rewriter
        self.policy = policy
        self.metrics = metrics

    async def check(self, messages: Sequence[Any]) -> GuardOutcome:
        """The messages to forward in place of ``messages``, and the rewrite behind them.

        Raises:
            GatewayError: 400 for input the guard cannot check (or no user message),
                503 when the rewriter failed under the ``raise`` policy.
        """
        started = time.perf_counter()
        try:
            guarded = await self.rewriter.aguard(from_openai(messages), on_error=self.policy)
        except InputError as exc:
            self.metrics.rewrites.labels(risk="unknown", action="refused_input").inc()
            raise invalid_request(
                str(exc), code=input_error_code(exc), param=input_error_param(exc)
            ) from exc
        except VLMGuardError as exc:
            # Only the raise policy lets a rewriter failure out of aguard.
            self.metrics.rewrite_seconds.observe(time.perf_counter() - started)
            self.metrics.fallbacks.labels(policy="raise", reason=type(exc).__name__).inc()
            raise GatewayError(
                503,
                f"the guard could not check this request ({type(exc).__name__})",
                type="guard_error",
                code="guard_unavailable",
            ) from exc
        if guarded.result is None:
            # No user turn and no image: nothing for the rewriter to read, so nothing the
            # gateway could vouch for.
            raise invalid_request(
                "the conversation has no user message to check", code="invalid_request"
            )
        self.metrics.record_rewrite(guarded.result, self.policy, time.perf_counter() - started)
        if guarded.dropped:
            self.metrics.dropped_parts.inc(len(guarded.dropped))
            logger.info("dropped unsupported parts before forwarding: %s", guarded.dropped)
        return GuardOutcome(to_openai(guarded.conversation), guarded.result, guarded.dropped)


def guard_report(outcome: GuardOutcome) -> dict[str, Any]:
    """What ``expose_analysis`` adds to a response, under the ``vlmguard`` key."""
    result = outcome.result
    return {
        "risk": result.risk_label,
        "action": result.action,
        "changed": result.changed,
        "analysis": result.analysis,
        "rewritten_prompt": result.prompt,
        "fallback": result.fallback,
        "dropped_parts": list(outcome.dropped),
    }


__all__ = ["Guard", "GuardOutcome", "guard_report", "input_error_code", "input_error_param"]
