"""Shadow mode: forward the original request at once, and guard it beside the response.

A team can measure the guard on its own traffic before it enforces anything: every
request goes upstream exactly as the client sent it, with no added latency, while the
guard runs in a background task and records what it would have done (risk, action,
analysis, a unified diff of the prompt) in the metrics and the audit log.

- Input enforce mode would refuse is recorded as a would-be refusal (``refused_input``
  and its error code) and forwarded anyway.
- A failing rewriter never touches the response; it is recorded (``guard_unavailable``
  under the ``raise`` policy, ``error`` for anything unexpected).
- Shadow work is bounded: past ``limit`` rewrites in flight a request is recorded as
  ``skipped`` ("shadow queue full") instead of queued, so a slow rewriter cannot pile
  up work and memory behind live traffic.
- On shutdown the work in flight gets a grace period, then is cancelled and recorded
  as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Sequence
from typing import Any

from ..audit import AuditRecord
from .guard import Decision, Guard, RequestContext

logger = logging.getLogger("vlmguard_plugins.server")

QUEUE_FULL = "shadow queue full"
SHUTTING_DOWN = "shutting down"


def prompt_diff(original: str, rewrite: str) -> str:
    """A unified diff from the user's text to the rewrite (empty when they are equal)."""
    lines = difflib.unified_diff(
        original.splitlines(keepends=True),
        rewrite.splitlines(keepends=True),
        fromfile="original",
        tofile="rewrite",
    )
    # A last line without its newline would run into the next diff line.
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class ShadowGuard:
    """Runs ``guard`` beside forwarded requests, at most ``limit`` at once, and records it.

    Decisions are counted in ``vlmguard_gateway_shadow_decisions_total{risk,action}``
    and written to the guard's audit log (mode ``shadow``).
    """

    def __init__(self, guard: Guard, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.guard = guard
        self.limit = limit
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        """Shadow rewrites running now."""
        return len(self._tasks)

    def submit(self, messages: Sequence[Any], context: RequestContext) -> bool:
        """Start guarding ``messages`` in the background; False when skipped instead.

        Returns at once: the caller forwards the original request without waiting.
        """
        if self.closed or len(self._tasks) >= self.limit:
            self._skip(context, SHUTTING_DOWN if self.closed else QUEUE_FULL)
            return False
        task = asyncio.get_running_loop().create_task(self._observe(messages, context))
        # The set holds the task alive until it is done (the loop keeps weak references).
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _observe(self, messages: Sequence[Any], context: RequestContext) -> None:
        try:
            decision = await self.guard.decide(messages)
        except asyncio.CancelledError:
            self._count("unknown", "cancelled")
            self.guard.write_audit(self._bare_record("cancelled", context, SHUTTING_DOWN))
            raise
        except Exception as exc:
            # The response has gone on without us; a bug here must not reach it.
            logger.exception("the shadow guard failed", exc_info=exc)
            self._count("unknown", "error")
            self.guard.write_audit(self._bare_record("error", context, type(exc).__name__))
            return
        self._record(decision, context)

    def _record(self, decision: Decision, context: RequestContext) -> None:
        result = decision.result
        self.guard.metrics.rewrite_seconds.observe(decision.seconds)
        self._count(result.risk_label if result is not None else "unknown", decision.action)
        fields: dict[str, Any] = {"policy": self.guard.policy}
        audit = self.guard.audit
        if result is not None and result.changed and audit is not None and audit.include_text:
            fields["diff"] = prompt_diff(result.original, result.prompt)
        self.guard.write_audit(decision.audit_record("shadow", context, **fields))

    def _skip(self, context: RequestContext, reason: str) -> None:
        self._count("unknown", "skipped")
        self.guard.write_audit(self._bare_record("skipped", context, reason))

    def _count(self, risk: str, action: str) -> None:
        self.guard.metrics.shadow_decisions.labels(risk=risk, action=action).inc()

    def _bare_record(self, action: str, context: RequestContext, error: str) -> AuditRecord:
        return AuditRecord(
            mode="shadow",
            action=action,
            error=error,
            request_id=context.request_id,
            model=context.model,
            policy=self.guard.policy,
        )

    async def aclose(self, grace_s: float) -> None:
        """Stop taking work; wait up to ``grace_s`` for the work in flight, cancel the rest.

        Returns once every shadow task has finished.
        """
        self.closed = True
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("cancelled %d shadow rewrites at shutdown", len(pending))
            await asyncio.wait(pending)


__all__ = ["QUEUE_FULL", "SHUTTING_DOWN", "ShadowGuard", "prompt_diff"]
