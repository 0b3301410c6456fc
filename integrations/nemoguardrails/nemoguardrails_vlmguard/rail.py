"""The rail itself: NeMo's conversation in, the guarded ``$user_message`` (and the verdict) out."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vlmguard_plugins import BLOCK_INSTRUCTION, Rewriter, RewriteResult
from vlmguard_plugins.conversation import Conversation, check_coverage
from vlmguard_plugins.conversation.openai_format import content_to_openai
from vlmguard_plugins.errors import InputError, UnsupportedContentError

from .conversation import conversation_from_events

logger = logging.getLogger("nemoguardrails_vlmguard")

UserMessage = str | list[dict[str, Any]]
"""NeMo's ``$user_message``: a string, or a list of OpenAI-style content parts."""


@dataclass(frozen=True)
class VLMGuardRewrite:
    """What the rail returns to the flow (``$vlmguard`` in Colang).

    Attributes:
        user_message: the message to continue with: the rewritten text in place of the
            user's, every image part where it was (a string when the user sent a
            string).  For a refused input it is the core's decline instruction, a
            string with nothing of the user's content in it.
        prompt: the rewritten text alone (empty for a refused input).
        original: the user's text.
        analysis: the rewriter's textual, visual and cross-modal reasoning.
        risk: ``none``, ``low``, ``medium`` or ``high``; ``unknown`` when the failure
            policy answered or the input was refused (a failure is not a verdict).
        action: ``rewrite``, ``unchanged``, the failure policy that acted (``shield``,
            ``passthrough``, ``block``), or ``refuse`` for input the guard cannot check.
        fallback: why the failure policy acted, else None.
        error_type: for a refused input, the core error's class name
            (``UnsupportedContentError``, ``URLPolicyError``, ``ImageDecodeError``,
            ``TextTooLongError``...), else None.
        error: for a refused input, the error's message, else None.
        result: the core :class:`~vlmguard_plugins.RewriteResult`; None for a refused
            input, which never reached the rewriter's model.
    """

    user_message: UserMessage
    prompt: str
    original: str
    analysis: str
    risk: str
    action: str
    fallback: str | None
    result: RewriteResult | None = field(repr=False)
    error_type: str | None = None
    error: str | None = None

    @property
    def is_blocked(self) -> bool:
        """True when the request must not reach the main model: refused input or ``block``."""
        return self.action == "refuse" or (self.result is not None and self.result.blocked)

    @property
    def is_transform(self) -> bool:
        """True when the message that continues differs from the user's."""
        return self.result is not None and self.result.changed

    @classmethod
    def from_result(cls, user_message: UserMessage, result: RewriteResult) -> VLMGuardRewrite:
        """The verdict for a rewrite (or a failure-policy result) and the message it produced."""
        return cls(
            user_message=user_message,
            prompt=result.prompt,
            original=result.original,
            analysis=result.analysis,
            risk=result.risk_label,
            action=result.action,
            fallback=result.fallback,
            result=result,
        )

    @classmethod
    def refused(cls, original: str, error: InputError) -> VLMGuardRewrite:
        """The verdict for input the guard cannot check: the rail refuses it."""
        return cls(
            user_message=BLOCK_INSTRUCTION,
            prompt="",
            original=original,
            analysis="",
            risk="unknown",
            action="refuse",
            fallback=None,
            result=None,
            error_type=type(error).__name__,
            error=str(error),
        )


@dataclass
class VLMGuardRail:
    """The rewriting input rail bound to one :class:`~vlmguard_plugins.Rewriter`.

    Each rewrite guards the whole conversation through :meth:`Rewriter.aguard
    <vlmguard_plugins.Rewriter.aguard>`: the images of every turn go to the rewriter,
    the current message's text is rewritten.  Input the guard cannot check (a part
    it cannot read, an image refused by the URL policy or the image limits, a
    conversation over the limits) is refused, whatever the failure policy: the flow
    then says ``bot refuse to respond``.  Image URLs are user-controlled, so local
    paths and ``file://`` URLs are always refused.

    Args:
        rewriter: the rewriter every rewrite goes through.
        use_history: give the rewriter the earlier turns' text (their images are
            read either way).
    """

    rewriter: Rewriter
    use_history: bool = True

    async def rewrite(
        self, user_message: Any, events: Iterable[Any] | None = None
    ) -> VLMGuardRewrite:
        """Guard ``user_message`` (a string or a list of content parts) given NeMo's ``events``."""
        conversation = conversation_from_events(events, user_message, use_history=self.use_history)
        try:
            self._check_earlier_turns(conversation)
            guarded = await self.rewriter.aguard(conversation, allow_local_files=False)
        except InputError as error:
            logger.warning("vlmguard rail refused the input (%s): %s", type(error).__name__, error)
            return VLMGuardRewrite.refused(conversation.turns[-1].text, error)
        # The conversation always ends with the user turn, so there is a target and a result.
        assert guarded.result is not None and guarded.target is not None
        message = content_to_openai(guarded.conversation.turns[guarded.target])
        return VLMGuardRewrite.from_result(message, guarded.result)

    def _check_earlier_turns(self, conversation: Conversation) -> None:
        """Refuse parts of earlier turns that ``unsupported_content: drop`` would drop.

        The rail can change only ``$user_message``; NeMo forwards the earlier messages
        as the caller sent them, so a part dropped from an earlier turn would still
        reach the main model.
        """
        if self.rewriter.unsupported_content != "drop":
            return  # under "refuse" the core refuses such parts in every turn itself
        for position, turn in enumerate(conversation.turns[:-1]):
            _, dropped = check_coverage(Conversation((turn,)), unsupported_content="drop")
            if dropped:
                raise UnsupportedContentError(
                    f"message {position} ({turn.role}) holds a {dropped[0]!r} part, which the "
                    "guard cannot check; the rail can drop such parts only from the current "
                    "message, because NeMo forwards earlier messages as they were sent. "
                    "Remove it from the conversation",
                    part_type=dropped[0],
                    role=turn.role,
                )


__all__ = ["UserMessage", "VLMGuardRail", "VLMGuardRewrite"]
