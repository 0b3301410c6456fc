"""Guard a conversation with a rewriter: plan, rewrite, write back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..policy import validate_policy
from ..types import FailurePolicyName, RewriteResult
from .coverage import apply_result, plan
from .model import Conversation

if TYPE_CHECKING:
    from ..rewriter import Rewriter


@dataclass(frozen=True)
class GuardedConversation:
    """The conversation to forward to the model, and the rewrite that produced it.

    ``result`` is ``None`` when there was nothing to rewrite (no user turn, no image).
    ``target`` is the index of the rewritten user turn; ``dropped`` lists the types of
    parts removed under ``unsupported_content="drop"``.
    """

    conversation: Conversation
    result: RewriteResult | None
    target: int | None = None
    dropped: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.result is not None and self.result.changed


async def aguard_conversation(
    rewriter: Rewriter,
    conversation: Conversation,
    *,
    on_error: FailurePolicyName | None = None,
    allow_local_files: bool = False,
) -> GuardedConversation:
    """See :meth:`vlmguard_plugins.Rewriter.aguard`."""
    if on_error is not None:
        validate_policy(on_error)
    guard_plan = plan(
        conversation,
        unsupported_content=rewriter.unsupported_content,
        allow_local_files=allow_local_files,
        max_history_turns=rewriter.max_history_turns,
        max_text_chars=rewriter.max_text_chars,
        history_overflow=rewriter.history_overflow,
    )
    if guard_plan.request is None:
        return GuardedConversation(guard_plan.conversation, None, None, guard_plan.dropped)
    result = await rewriter.arewrite_checked(guard_plan.request, on_error=on_error)
    return GuardedConversation(
        apply_result(guard_plan, result), result, guard_plan.target, guard_plan.dropped
    )


__all__ = ["GuardedConversation", "aguard_conversation"]
