"""The core conversation model, and the one place where a conversation is guarded.

Every entry point (the gateway, the LangChain, LlamaIndex and NeMo Guardrails
adapters, the benchmark defences) converts its messages into a :class:`Conversation`
(turns of ordered parts: :class:`TextPart`, :class:`ImagePart`, :class:`OtherPart`),
calls :meth:`vlmguard_plugins.Rewriter.aguard`, and converts the result back.
Coverage (what the rewriter must see, what is refused) and write-back (where the
rewrite goes) live in :mod:`~vlmguard_plugins.conversation.coverage`, once.

Example::

    from vlmguard_plugins.conversation import from_openai, to_openai

    guarded = await rewriter.aguard(from_openai(body["messages"]))
    body["messages"] = to_openai(guarded.conversation)
"""

from __future__ import annotations

from .coverage import (
    ASSISTANT_STRUCTURE_KINDS,
    GuardPlan,
    UnsupportedContentPolicy,
    apply_result,
    check_coverage,
    plan,
    write_back,
)
from .guard import GuardedConversation, aguard_conversation, inputs_checked_callback
from .model import Conversation, ImagePart, OtherPart, Part, Role, TextPart, Turn
from .openai_format import from_openai, to_openai

__all__ = [
    "ASSISTANT_STRUCTURE_KINDS",
    "Conversation",
    "GuardPlan",
    "GuardedConversation",
    "ImagePart",
    "OtherPart",
    "Part",
    "Role",
    "TextPart",
    "Turn",
    "UnsupportedContentPolicy",
    "aguard_conversation",
    "apply_result",
    "check_coverage",
    "from_openai",
    "inputs_checked_callback",
    "plan",
    "to_openai",
    "write_back",
]
