"""The rail itself: NeMo's conversation in, the guarded ``$user_message`` (and the verdict) out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmguard_plugins import BLOCK_INSTRUCTION, Rewriter, RewriteResult
from vlmguard_plugins.conversation import Conversation, check_coverage
from vlmguard_plugins.conversation.openai_format import content_to_openai
from vlmguard_plugins.errors import InputError, UnsupportedContentError

from .conversation import (
    conversation_from_events,
    conversation_from_tool_messages,
    unseen_tool_results,
)

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
    """The rewriting rails bound to one :class:`~vlmguard_plugins.Rewriter`.

    Each rewrite guards the whole conversation through :meth:`Rewriter.aguard
    <vlmguard_plugins.Rewriter.aguard>`: the images of every turn go to the rewriter,
    the text of the user's request is rewritten.  :meth:`rewrite` serves the input
    rail (the conversation ends with the user's message), :meth:`check_tool_messages`
    the tool input rail (it ends with tool results).  Input the guard cannot check (a
    part it cannot read, an image refused by the URL policy or the image limits, a
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
    # The last request's tool messages (NeMo's $tool_messages list, one object for the
    # whole request), the conversation guarded and its verdict. NeMo runs a tool input
    # rail once for each tool message of a request, and every run guards the same
    # conversation, so the runs after the first reuse the verdict instead of paying for
    # another rewrite. Another request (a retry too) gets a rewrite of its own: a
    # failure-policy verdict must not outlive the request it was made for.
    _last_tool_verdict: tuple[object, Conversation, VLMGuardRewrite] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    async def rewrite(
        self, user_message: Any, events: Iterable[Any] | None = None
    ) -> VLMGuardRewrite:
        """Guard ``user_message`` (a string or a list of content parts) given NeMo's ``events``."""
        conversation = conversation_from_events(events, user_message, use_history=self.use_history)
        unseen = unseen_tool_results(events)
        if unseen:
            # NeMo 0.24 runs no input rail at all for such a request (it stops replaying
            # the history at the tool call); should one run, it must not pass tool
            # results it cannot read.
            error = UnsupportedContentError(
                f"the conversation holds the results of tool calls {', '.join(unseen)}, which "
                "NeMo does not show to input rails; send the conversation from the user's "
                "current request on, or end it with the tool results so that the "
                "'vlmguard check tool input' rail reads them",
                part_type="tool result",
                role="tool",
            )
            logger.warning("vlmguard rail refused the input (%s): %s", type(error).__name__, error)
            return VLMGuardRewrite.refused(conversation.turns[-1].text, error)
        return await self._guard(conversation, "the input")

    async def check_tool_messages(
        self, tool_messages: Sequence[Any] | None, events: Iterable[Any] | None = None
    ) -> VLMGuardRewrite:
        """Guard a conversation that ends in tool results (``$tool_messages``).

        The tool messages are read as the rewriter's history, text and images, never
        rewritten: NeMo forwards them to the main model as they were sent.  The
        verdict's ``user_message`` is the user's request (the last user turn) with
        the rewrite in place of its text, for the flow to put in ``$user_message``,
        which NeMo's passthrough mode writes into that request before calling the
        main model.
        """
        conversation = conversation_from_tool_messages(
            events, tool_messages or [], use_history=self.use_history
        )
        remembered = self._last_tool_verdict
        if (
            remembered is not None
            and tool_messages is not None
            and remembered[0] is tool_messages
            and remembered[1] == conversation
        ):
            return remembered[2]
        verdict = await self._guard(conversation, "the tool results")
        self._last_tool_verdict = (tool_messages, conversation, verdict)
        return verdict

    async def _guard(self, conversation: Conversation, what: str) -> VLMGuardRewrite:
        target = conversation.last_user_index()
        try:
            if target is None:
                raise InputError(
                    "the conversation has no user message, so the guard has no request to "
                    "rewrite; add the user's message"
                )
            self._check_unwritable_turns(conversation, target)
            guarded = await self.rewriter.aguard(conversation, allow_local_files=False)
        except InputError as error:
            logger.warning("vlmguard rail refused %s (%s): %s", what, type(error).__name__, error)
            original = conversation.turns[target].text if target is not None else ""
            return VLMGuardRewrite.refused(original, error)
        # The conversation has a user turn, so the core has a target and a result.
        assert guarded.result is not None and guarded.target is not None
        message = content_to_openai(guarded.conversation.turns[guarded.target])
        return VLMGuardRewrite.from_result(message, guarded.result)

    def _check_unwritable_turns(self, conversation: Conversation, target: int) -> None:
        """Refuse parts outside the user's request that ``unsupported_content: drop`` would drop.

        A rail can change only the user's request (``$user_message``); NeMo forwards
        every other message (earlier turns, tool results) as the caller sent it, so a
        part dropped from one of them would still reach the main model.
        """
        if self.rewriter.unsupported_content != "drop":
            return  # under "refuse" the core refuses such parts in every turn itself
        for position, turn in enumerate(conversation.turns):
            if position == target:
                continue
            _, dropped = check_coverage(Conversation((turn,)), unsupported_content="drop")
            if dropped:
                raise UnsupportedContentError(
                    f"message {position} ({turn.role}) holds a {dropped[0]!r} part, which the "
                    "guard cannot check; the rail can drop such parts only from the user's "
                    "request, not from earlier messages or tool results, which NeMo forwards "
                    "as they were sent. Remove it from the conversation",
                    part_type=dropped[0],
                    role=turn.role,
                )


__all__ = ["UserMessage", "VLMGuardRail", "VLMGuardRewrite"]
