"""Guard a conversation with a rewriter: plan, rewrite, write back.

The guard checks its input first (coverage, text and history limits, every image
loaded and decoded under the image limits and the URL policy), then calls the rewriter
model.  A caller that overlaps the model call with other work (speculative mode) learns
that the checks have passed through :func:`inputs_checked_callback`: the callback is
called once the input is known to be acceptable and only the model call is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
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


_INPUTS_CHECKED: ContextVar[Callable[[], None] | None] = ContextVar(
    "vlmguard_inputs_checked", default=None
)


@contextlib.contextmanager
def inputs_checked_callback(callback: Callable[[], None] | None) -> Iterator[None]:
    """Call ``callback`` when a guard started inside this block has checked its input.

    The callback is carried by the context: a task created inside the block (and a
    synchronous :meth:`~vlmguard_plugins.Rewriter.guard`, whose loop thread gets the
    caller's context) sees it.  It may be called from another thread, at most once per
    rewrite, and never for input the guard refuses.  ``None`` switches the signal off.
    """
    token = _INPUTS_CHECKED.set(callback)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def report_inputs_checked() -> None:
    """Tell the caller (see :func:`inputs_checked_callback`) that the input passed every check.

    Called by the rewriter once the request's text, history and images are checked,
    loaded and within the limits, before its model is called.
    """
    callback = _INPUTS_CHECKED.get()
    if callback is not None:
        callback()


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
    if guard_plan.dropped:
        # The original carries parts the policy drops: it must not reach the model at
        # all, so nobody is told that it could go out before the verdict.
        with inputs_checked_callback(None):
            result = await rewriter.arewrite_checked(guard_plan.request, on_error=on_error)
    else:
        result = await rewriter.arewrite_checked(guard_plan.request, on_error=on_error)
    return GuardedConversation(
        apply_result(guard_plan, result), result, guard_plan.target, guard_plan.dropped
    )


__all__ = [
    "GuardedConversation",
    "aguard_conversation",
    "inputs_checked_callback",
    "report_inputs_checked",
]
