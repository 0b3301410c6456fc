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

:meth:`Guard.decide` returns every outcome, failures included, without raising, so the
modes share it: enforce and speculative mode raise the refusal (:meth:`Guard.guard`),
shadow mode only records it.  Every decision is counted in the metrics and, when the
gateway has one, written to the audit log (:mod:`vlmguard_plugins.audit`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..audit import AuditLog, AuditRecord, ImageDigest, digest_images
from ..conversation import Conversation, GuardedConversation, ImagePart, from_openai, to_openai
from ..errors import InputError, VLMGuardError, input_error_reply
from ..rewriter import Rewriter
from ..speculative import releasable
from ..types import FailurePolicyName, RewriteResult
from .errors import GatewayError, invalid_request
from .metrics import GatewayMetrics

logger = logging.getLogger("vlmguard_plugins.server")

NO_USER_MESSAGE = "the conversation has no user message to check"


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


@dataclass(frozen=True)
class RequestContext:
    """Who a decision is for: the request's id and the model it asked for."""

    request_id: str
    model: str | None = None


@dataclass(frozen=True)
class Decision:
    """The guard's answer for one conversation, failures included, before any is raised.

    Exactly one of ``guarded`` and ``error`` is set.  ``guarded.result`` is None when
    the conversation has nothing for the rewriter to read (no user message).
    """

    conversation: Conversation
    guarded: GuardedConversation | None
    error: VLMGuardError | None
    seconds: float
    images: tuple[ImageDigest, ...] = ()

    @property
    def result(self) -> RewriteResult | None:
        return self.guarded.result if self.guarded is not None else None

    @property
    def action(self) -> str:
        """The result's action, ``refused_input`` (a 400) or ``guard_unavailable`` (a 503)."""
        if self.result is not None:
            return self.result.action
        if self.error is None or isinstance(self.error, InputError):
            return "refused_input"
        return "guard_unavailable"

    @property
    def error_code(self) -> str | None:
        """The code of the error a client gets (or would get) instead of an answer."""
        if self.result is not None:
            return None
        if self.error is None:
            return "invalid_request"
        if isinstance(self.error, InputError):
            return input_error_reply(self.error).code
        return "guard_unavailable"

    @property
    def error_detail(self) -> str | None:
        if self.result is not None:
            return None
        return str(self.error) if self.error is not None else NO_USER_MESSAGE

    def refusal(self) -> GatewayError:
        """The error the client gets when there is no result to forward."""
        if isinstance(self.error, InputError):
            reply = input_error_reply(self.error)
            return GatewayError(
                reply.status_code, reply.message, code=reply.code, param=reply.param
            )
        if self.error is not None:
            return GatewayError(
                503,
                f"the guard could not check this request ({type(self.error).__name__})",
                type="guard_error",
                code="guard_unavailable",
            )
        # No user turn and no image: nothing for the rewriter to read, so nothing the
        # gateway could vouch for.
        return invalid_request(NO_USER_MESSAGE, code="invalid_request")

    def audit_record(self, mode: str, context: RequestContext, **fields: Any) -> AuditRecord:
        """This decision as an audit record (``fields`` add or override fields)."""
        common: dict[str, Any] = {
            "request_id": context.request_id,
            "model": context.model,
            "latency_ms": self.seconds * 1000,
            "images": self.images,
            "dropped_parts": self.guarded.dropped if self.guarded is not None else (),
        }
        common.update(fields)
        if self.result is not None:
            return AuditRecord.for_result(self.result, mode=mode, **common)
        return AuditRecord(
            mode=mode,
            action=self.action,
            error=self.error_code,
            detail=self.error_detail,
            text=last_user_text(self.conversation),
            **common,
        )


def last_user_text(conversation: Conversation) -> str | None:
    """The text of the conversation's last user turn (None without one)."""
    index = conversation.last_user_index()
    return conversation.turns[index].text if index is not None else None


class Guard:
    """Guards chat messages with ``rewriter`` under the gateway's failure ``policy``.

    Every decision is counted in ``metrics`` and, with an ``audit`` log, written there
    as one line (``mode`` names the gateway's mode in it).
    """

    def __init__(
        self,
        rewriter: Rewriter,
        policy: FailurePolicyName,
        metrics: GatewayMetrics,
        audit: AuditLog | None = None,
        mode: str = "enforce",
    ) -> None:
        self.rewriter = rewriter
        self.policy = policy
        self.metrics = metrics
        self.audit = audit
        self.mode = mode

    async def decide(self, messages: Sequence[Any]) -> Decision:
        """Run the guard on ``messages``; input and guard errors are returned, not raised.

        With an audit log, the images are hashed in a thread while the rewriter runs.
        """
        conversation = from_openai(messages)
        hashing = None
        if self.audit is not None and _has_images(conversation):
            hashing = asyncio.ensure_future(asyncio.to_thread(digest_images, conversation))
        started = time.perf_counter()
        guarded: GuardedConversation | None = None
        error: VLMGuardError | None = None
        try:
            guarded = await self.rewriter.aguard(conversation, on_error=self.policy)
        except VLMGuardError as exc:
            # InputError whatever the policy; other errors only under the raise policy.
            error = exc
        except BaseException:
            if hashing is not None:
                hashing.add_done_callback(_retrieve)
            raise
        seconds = time.perf_counter() - started
        images = await hashing if hashing is not None else ()
        return Decision(conversation, guarded, error, seconds, images)

    async def guard(self, messages: Sequence[Any], context: RequestContext) -> GuardedConversation:
        """The guarded conversation to forward in place of ``messages``.

        Raises:
            GatewayError: 400 for input the guard cannot check (or no user message),
                503 when the rewriter failed under the ``raise`` policy.
        """
        decision = await self.decide(messages)
        self.record(decision, context)
        if decision.guarded is None or decision.guarded.result is None:
            raise decision.refusal() from decision.error
        return decision.guarded

    async def check(self, messages: Sequence[Any], context: RequestContext) -> GuardOutcome:
        """The messages to forward in place of ``messages``, and the rewrite behind them.

        Raises:
            GatewayError: as :meth:`guard`.
        """
        guarded = await self.guard(messages, context)
        assert guarded.result is not None  # guard() refuses a conversation without one
        return GuardOutcome(to_openai(guarded.conversation), guarded.result, guarded.dropped)

    def record(self, decision: Decision, context: RequestContext, **fields: Any) -> None:
        """Count an enforced decision in the metrics and write it to the audit log."""
        result = decision.result
        if result is not None:
            self.metrics.record_rewrite(result, self.policy, decision.seconds)
            if decision.guarded is not None and decision.guarded.dropped:
                self.metrics.dropped_parts.inc(len(decision.guarded.dropped))
                # Part types are the client's own strings: count them and cut each short.
                logger.info(
                    "dropped %d unsupported parts before forwarding: %s",
                    len(decision.guarded.dropped),
                    ", ".join(sorted({kind[:40] for kind in decision.guarded.dropped}))[:400],
                )
        elif isinstance(decision.error, InputError):
            self.metrics.rewrites.labels(risk="unknown", action="refused_input").inc()
        elif decision.error is not None:
            self.metrics.rewrite_seconds.observe(decision.seconds)
            self.metrics.fallbacks.labels(
                policy="raise", reason=type(decision.error).__name__
            ).inc()
        if self.mode == "speculative" and decision.guarded is not None and result is not None:
            outcome = "hit" if releasable(decision.guarded) else "miss"
            fields.setdefault("extra", {"speculative": outcome})
        self.write_audit(decision.audit_record(self.mode, context, policy=self.policy, **fields))

    def write_audit(self, record: AuditRecord) -> None:
        """Write ``record`` to the audit log, if any; a failure is logged and counted.

        The line is small and goes to the page cache, so it is written on the event loop.
        """
        if self.audit is None:
            return
        try:
            self.audit.write(record)
        except (OSError, ValueError) as exc:
            self.metrics.audit_errors.inc()
            logger.error("could not write the audit log: %s", exc)


def _has_images(conversation: Conversation) -> bool:
    return any(isinstance(part, ImagePart) for turn in conversation for part in turn.parts)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def guard_report(outcome: GuardOutcome | GuardedConversation) -> dict[str, Any]:
    """What ``expose_analysis`` adds to a response, under the ``vlmguard`` key.

    Raises:
        ValueError: ``outcome`` holds no rewrite.
    """
    result = outcome.result
    if result is None:
        raise ValueError("no rewrite to report")
    return {
        "risk": result.risk_label,
        "action": result.action,
        "changed": result.changed,
        "analysis": result.analysis,
        "rewritten_prompt": result.prompt,
        "fallback": result.fallback,
        "dropped_parts": list(outcome.dropped),
    }


__all__ = [
    "NO_USER_MESSAGE",
    "Decision",
    "Guard",
    "GuardOutcome",
    "RequestContext",
    "guard_report",
    "last_user_text",
]
