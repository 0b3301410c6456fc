"""LlamaIndex integration for vlmguard-plugins: a thin adapter on the core guard.

- :class:`VLMGuardLLM`: wraps any LlamaIndex ``LLM`` so every call is guarded first;
  pass it to query engines, chat engines and agents.  Inside an engine only the user's
  question is rewritten: the template and the retrieved context reach the LLM intact.
  Inside an agent every tool result is judged before the LLM's next call, a blocked
  verdict ends the run with ``block_message``, and verdicts are kept by conversation
  state (:class:`VerdictCache`), so steps that bring nothing new cost no rewriter call.
- :class:`VLMGuardQueryTransform`: a query transform that rewrites a query (given its
  image); use it with ``TransformQueryEngine``.
- :func:`guard_messages` / :func:`aguard_messages`: guard a list of ``ChatMessage``.
- :func:`to_conversation` / :func:`from_conversation`: the converter between
  ``ChatMessage`` lists and the core :class:`~vlmguard_plugins.Conversation`.
- :class:`VLMGuardRewriteEvent`: the instrumentation event emitted for every rewrite.

Each builds its rewriter from :class:`~vlmguard_plugins.RewriterSettings`
(``from_settings``) or the same setting names (``from_backend``), or takes a
:class:`~vlmguard_plugins.Rewriter` you built.
"""

from __future__ import annotations

from .conversation import from_conversation, to_conversation
from .events import VLMGuardRewriteEvent
from .llm import DEFAULT_BLOCK_MESSAGE, VLMGuardLLM
from .messages import GuardedMessages, aguard_messages, guard_messages
from .query_transform import VLMGuardQueryTransform
from .speculative import SpeculativeOutcome, speculative_outcome
from .user_query import UserQuery, current_user_query
from .verdicts import VerdictCache

__all__ = [
    "DEFAULT_BLOCK_MESSAGE",
    "GuardedMessages",
    "SpeculativeOutcome",
    "UserQuery",
    "VLMGuardLLM",
    "VLMGuardQueryTransform",
    "VLMGuardRewriteEvent",
    "VerdictCache",
    "aguard_messages",
    "current_user_query",
    "from_conversation",
    "guard_messages",
    "speculative_outcome",
    "to_conversation",
]
