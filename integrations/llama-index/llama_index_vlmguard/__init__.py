"""LlamaIndex integration for vlmguard-plugins.

- :class:`VLMGuardQueryTransform`: a query transform that rewrites a (multimodal)
  query; use it with ``TransformQueryEngine``.
- :class:`VLMGuardLLM`: wraps any LlamaIndex ``LLM`` so the last user message of
  every call is rewritten first; pass it to chat engines and multimodal query engines.
- :func:`guard_messages` / :func:`aguard_messages`: the same for a list of
  ``ChatMessage``, as a plain function.
- :class:`VLMGuardRewriteEvent`: the instrumentation event emitted for every rewrite.
"""

from __future__ import annotations

from .events import VLMGuardRewriteEvent
from .llm import VLMGuardLLM
from .messages import GuardedMessages, aguard_messages, guard_messages
from .query_transform import VLMGuardQueryTransform

__all__ = [
    "GuardedMessages",
    "VLMGuardLLM",
    "VLMGuardQueryTransform",
    "VLMGuardRewriteEvent",
    "aguard_messages",
    "guard_messages",
]
