"""The rail itself: one user message in, its guarded version (and the verdict) out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlmguard_plugins import Rewriter, RewriteRequest, RewriteResult
from vlmguard_plugins.errors import InputError
from vlmguard_plugins.policy import apply_failure_policy
from vlmguard_plugins.types import MAX_HISTORY_TURNS

from .messages import UserMessage, history_from_events, message_images, message_text, with_text


@dataclass(frozen=True)
class VLMGuardRewrite:
    """What the rail returns to the flow (``$vlmguard`` in Colang).

    Attributes:
        user_message: the message to continue with: the rewritten text in place of the
            user's, every image part untouched (a string when the user sent a string).
        prompt: the rewritten text alone.
        original: the user's text.
        analysis: the rewriter's textual, visual and cross-modal reasoning.
        risk: ``none``, ``low``, ``medium`` or ``high``.
        action: ``rewrite``, ``unchanged``, or the failure policy that acted
            (``shield``, ``passthrough``, ``block``).
        fallback: why the failure policy acted, else None.
        result: the core :class:`~vlmguard_plugins.RewriteResult`.
    """

    user_message: UserMessage
    prompt: str
    original: str
    analysis: str
    risk: str
    action: str
    fallback: str | None
    result: RewriteResult = field(repr=False)

    @property
    def is_blocked(self) -> bool:
        """True when the failure policy says the request must be refused."""
        return self.result.blocked

    @property
    def is_transform(self) -> bool:
        """True when the message that continues differs from the user's."""
        return self.result.changed

    @classmethod
    def from_result(cls, message: Any, result: RewriteResult) -> VLMGuardRewrite:
        return cls(
            user_message=with_text(message, result.prompt),
            prompt=result.prompt,
            original=result.original,
            analysis=result.analysis,
            risk=result.risk_label,
            action=result.action,
            fallback=result.fallback,
            result=result,
        )


@dataclass
class VLMGuardRail:
    """The rewriting input rail bound to one :class:`~vlmguard_plugins.Rewriter`.

    Image URLs inside user messages are user-controlled, so local paths and
    ``file://`` URLs are refused and remote fetching follows the rewriter's URL policy.
    """

    rewriter: Rewriter
    use_history: bool = True

    async def rewrite(
        self, user_message: Any, events: list[dict[str, Any]] | None = None
    ) -> VLMGuardRewrite:
        """Rewrite ``user_message`` (a string or a list of content parts)."""
        try:
            text = message_text(user_message)
        except InputError as error:
            return self._refused(user_message, "", error)
        try:
            request = RewriteRequest(
                text=text,
                images=message_images(user_message),
                history=history_from_events(events, MAX_HISTORY_TURNS) if self.use_history else [],
                allow_local_files=False,
            )
        except InputError as error:
            return self._refused(user_message, text, error)
        return VLMGuardRewrite.from_result(user_message, await self.rewriter.arewrite(request))

    def _refused(self, user_message: Any, text: str, error: InputError) -> VLMGuardRewrite:
        # A message that cannot be read in full still gets the failure policy, never a pass.
        result = apply_failure_policy(self.rewriter.on_error, text, error)
        return VLMGuardRewrite.from_result(user_message, result)
