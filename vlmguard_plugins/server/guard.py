"""The guard step of the gateway: the last user turn through the rewriter and the policy.

Input the guard cannot accept (a refused image or URL, text over the limit) is the
client's to fix, so it is answered with a 400 and never forwarded: an image the guard
could not check must not reach the VLM either.  Rewriter failures (backend errors,
timeouts, unparsable output) go to the failure policy; under ``raise`` the client
gets a 503.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import ImageInputError, InputError, VLMGuardError
from ..policy import apply_failure_policy
from ..rewriter import Rewriter
from ..types import FailurePolicyName, RewriteRequest, RewriteResult
from .chat import UserTurn
from .errors import GatewayError, invalid_request
from .metrics import GatewayMetrics


class Guard:
    """Rewrites user turns with ``rewriter`` under the gateway's failure ``policy``."""

    def __init__(
        self, rewriter: Rewriter, policy: FailurePolicyName, metrics: GatewayMetrics
    ) -> None:
        self.rewriter = rewriter
        self.policy = policy
        self.metrics = metrics

    async def check(self, turn: UserTurn) -> RewriteResult:
        """The result whose ``prompt`` replaces the turn's text.

        Raises:
            GatewayError: 400 for refused input, 503 when the rewriter failed under
                the ``raise`` policy.
        """
        started = time.perf_counter()
        try:
            request = RewriteRequest(
                text=turn.text,
                images=list(turn.image_urls),
                history=turn.history,
                allow_local_files=False,
            )
            result = await self.rewriter.arewrite(request, on_error="raise")
        except InputError as exc:
            code = "invalid_image" if isinstance(exc, ImageInputError) else "text_too_long"
            self.metrics.rewrites.labels(risk="unknown", action="refused_input").inc()
            raise invalid_request(str(exc), code=code, param="messages") from exc
        except VLMGuardError as exc:
            elapsed = time.perf_counter() - started
            if self.policy == "raise":
                self.metrics.rewrite_seconds.observe(elapsed)
                self.metrics.fallbacks.labels(policy="raise", reason=type(exc).__name__).inc()
                raise GatewayError(
                    503,
                    f"the guard could not check this request ({type(exc).__name__})",
                    type="guard_error",
                    code="guard_unavailable",
                ) from exc
            result = apply_failure_policy(self.policy, turn.text, exc, latency_ms=elapsed * 1000)
        self.metrics.record_rewrite(result, self.policy, time.perf_counter() - started)
        return result


def guard_report(result: RewriteResult) -> dict[str, Any]:
    """What ``expose_analysis`` adds to a response, under the ``vlmguard`` key."""
    return {
        "risk": result.risk_label,
        "action": result.action,
        "changed": result.changed,
        "analysis": result.analysis,
        "rewritten_prompt": result.prompt,
        "fallback": result.fallback,
    }
