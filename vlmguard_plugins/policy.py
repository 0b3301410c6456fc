"""What the guard does when it cannot rewrite: the failure policy.

A guardrail must not fail open by accident, so the default is ``shield``: the
user's text wrapped in a static safety instruction of our own.  ``passthrough``
(fail open) is opt-in and logged; ``block`` makes the VLM decline; ``raise`` gives
the caller the typed error.
"""

from __future__ import annotations

import logging
import re
from typing import get_args

from .errors import ConfigurationError, VLMGuardError
from .types import FailurePolicyName, RewriteResult, Usage

__all__ = [
    "BLOCK_INSTRUCTION",
    "FAILURE_POLICIES",
    "SHIELD_INSTRUCTION",
    "apply_failure_policy",
    "fallback_error_type",
    "shield_prompt",
    "validate_policy",
]

logger = logging.getLogger("vlmguard_plugins")

FAILURE_POLICIES: tuple[str, ...] = get_args(FailurePolicyName)

SHIELD_INSTRUCTION = (
    "Before you answer, look at the image and the request together and consider what "
    "the answer could be used for. Help with the legitimate part of the request. If a "
    "complete answer could help someone hurt themselves or others, break the law, invade "
    "someone's privacy or endanger health or safety, explain briefly why you will not give "
    "those details, and offer safe, practical guidance or a better source of help instead."
)
"""The static safety instruction of the ``shield`` policy (and the static-defence baseline)."""

BLOCK_INSTRUCTION = (
    "A safety check withheld this request. Reply only with one short, polite sentence "
    "saying that you cannot help with this request. Do not describe the image and do not "
    "answer any part of the request."
)
"""The prompt sent in place of the user's text under the ``block`` policy."""


def shield_prompt(text: str) -> str:
    """The user's text under the static safety instruction."""
    return f"{SHIELD_INSTRUCTION}\n\nRequest: {text}"


_ERROR_TYPE_NAME = re.compile(r"[A-Za-z_][\w.]*")


def fallback_error_type(reason: str) -> str:
    """The error class a failure policy's ``fallback`` reason names, or ``"_OTHER"``.

    A reason reads ``Type: message``; the message may quote the request (an upstream
    server's error body, an image URL), the class name never does, so logs and spans
    that must not hold client text keep only this.
    """
    name = reason.split(":", 1)[0].strip()
    return name if _ERROR_TYPE_NAME.fullmatch(name) else "_OTHER"


def validate_policy(name: str) -> FailurePolicyName:
    """Return ``name`` if it is a failure policy, else raise :class:`ConfigurationError`."""
    if name not in FAILURE_POLICIES:
        raise ConfigurationError(
            f"unknown failure policy {name!r}; choose one of {', '.join(FAILURE_POLICIES)}"
        )
    return name  # type: ignore[return-value]


def apply_failure_policy(
    policy: FailurePolicyName,
    original: str,
    error: VLMGuardError,
    *,
    latency_ms: float = 0.0,
    usage: Usage | None = None,
    raw: str | None = None,
) -> RewriteResult:
    """Turn a failure into a result according to ``policy`` (or re-raise for ``raise``).

    The result's ``risk`` is ``None``: a failure is not a verdict, whatever the policy.
    """
    reason = f"{type(error).__name__}: {error}"
    if policy == "raise":
        raise error
    # The reason may quote the user or an upstream error body: the error's class only at
    # the levels production logs keep, the whole reason at DEBUG.
    logger.debug("vlmguard failure policy %s: %s", policy, reason)
    if policy == "passthrough":
        logger.warning(
            "vlmguard passthrough: sending the original text unguarded (%s)", type(error).__name__
        )
        prompt = original
    elif policy == "block":
        prompt = BLOCK_INSTRUCTION
    else:
        logger.info("vlmguard shield fallback (%s)", type(error).__name__)
        prompt = shield_prompt(original)
    return RewriteResult(
        prompt=prompt,
        original=original,
        risk=None,
        changed=prompt != original,
        fallback=reason,
        action=policy,
        latency_ms=latency_ms,
        usage=usage or Usage(),
        raw=raw,
    )
