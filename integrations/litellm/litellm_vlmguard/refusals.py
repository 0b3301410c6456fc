"""The errors the guardrail answers with, in the LiteLLM proxy's own shapes.

A guardrail that refuses a request raises FastAPI's ``HTTPException`` with a 400
status and a ``{"error": ...}`` detail, as LiteLLM's own guardrails do: the proxy
answers the client with its OpenAI-style error body, counts the request as a
guardrail intervention, and the model is never called.  A rewriter that failed
under the ``raise`` policy is not an intervention: it is answered with 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from vlmguard_plugins.errors import InputError, VLMGuardError, input_error_reply
from vlmguard_plugins.policy import fallback_error_type
from vlmguard_plugins.types import RewriteResult


class GuardrailStartupError(VLMGuardError, RuntimeError):
    """The guardrail cannot start: an invalid option, a mode that cannot rewrite.

    Not a ``ValueError``: the LiteLLM proxy logs a guardrail whose constructor raises
    ``ValueError`` or ``TypeError`` and starts without it, so every request would
    reach the model unguarded.  This error stops the proxy instead.  The invalid
    setting's :class:`~vlmguard_plugins.errors.ConfigurationError` is its cause.
    """


class GuardrailRefusal(HTTPException):
    """A request the guardrail refused; the client receives ``status_code`` and ``detail``.

    ``detail`` is ``{"error": message, "code": ..., "vlmguard": {...}}``; ``param``
    (read by the proxy into the OpenAI error's ``param``) names the refused part
    when the guard knows it.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        verdict: dict[str, Any] | None = None,
    ) -> None:
        detail: dict[str, Any] = {"error": message, "code": code}
        if verdict is not None:
            detail["vlmguard"] = verdict
        super().__init__(status_code=status_code, detail=detail)
        self.message = message
        self.code = code
        self.param = param


def input_refusal(error: InputError) -> GuardrailRefusal:
    """The 400 for input the guard cannot check (an unsupported part, a bad image...).

    Status, code and ``param`` are the core's (:func:`~vlmguard_plugins.errors.input_error_reply`),
    so the proxy refuses input exactly as the gateway does.
    """
    reply = input_error_reply(error)
    return GuardrailRefusal(reply.status_code, reply.message, code=reply.code, param=reply.param)


def blocked_refusal(result: RewriteResult, *, threshold: bool) -> GuardrailRefusal:
    """The 400 for a request the guardrail blocks.

    ``threshold`` says the verdict reached ``block_risk``; otherwise the failure policy
    ``block`` answered, and the message says the request could not be checked: a
    failure never reads as a verdict.  The client is told the failure's error class
    only: its full text may hold the rewriter's address and an upstream server's error.
    """
    if threshold:
        message = f"the vlmguard guardrail blocked this request (risk: {result.risk_label})"
    else:
        error_type = fallback_error_type(result.fallback or "")
        message = (
            "the vlmguard guardrail could not check this request and its failure policy "
            f"is 'block' ({error_type})"
        )
    return GuardrailRefusal(400, message, code="vlmguard_blocked", verdict=verdict_of(result))


def unavailable_refusal(error: VLMGuardError) -> GuardrailRefusal:
    """The 503 for a rewriter that failed under the ``raise`` policy: nothing was checked."""
    return GuardrailRefusal(
        503,
        f"the vlmguard guardrail could not check this request ({type(error).__name__})",
        code="guard_unavailable",
    )


def call_type_refusal(call_type: str) -> GuardrailRefusal:
    """The 400 for a call type whose content the guardrail does not read."""
    return GuardrailRefusal(
        400,
        f"the vlmguard guardrail checks chat completions; a {call_type!r} request cannot be "
        "checked, so it is refused. Apply the guardrail only to chat models, or list the "
        "call type in allow_call_types to let it through unchecked",
        code="unsupported_call_type",
    )


def verdict_of(result: RewriteResult, *, include_detail: bool = False) -> dict[str, Any]:
    """What the guardrail records of a rewrite (for the proxy's logs and refusals).

    The user's text and the rewrite are left out: the proxy's logging decides what
    prompt text it keeps.  ``fallback`` (why the failure policy answered) is there only
    when it did, as the error class (``BackendError``); the whole reason, whose message
    may quote the request, only with ``include_detail``.
    """
    verdict: dict[str, Any] = {
        "risk": result.risk_label,
        "action": result.action,
        "changed": result.changed,
    }
    if result.fallback is not None:
        verdict["fallback"] = (
            result.fallback if include_detail else fallback_error_type(result.fallback)
        )
    return verdict


__all__ = [
    "GuardrailRefusal",
    "GuardrailStartupError",
    "blocked_refusal",
    "call_type_refusal",
    "input_refusal",
    "unavailable_refusal",
    "verdict_of",
]
