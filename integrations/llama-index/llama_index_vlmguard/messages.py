"""Guard a list of LlamaIndex ``ChatMessage`` with the core: convert, guard, convert back.

The messages become a core :class:`~vlmguard_plugins.Conversation`
(:mod:`llama_index_vlmguard.conversation` says how each block and image source is
read), :meth:`vlmguard_plugins.Rewriter.aguard` checks and rewrites it, and the result
is converted back.  So, as for every entry point of the project:

- the rewriter reads the last user message's text, every earlier turn as history, and
  every image of every turn;
- a block the guard cannot read (audio, video, a document, an unknown block) is
  refused with :class:`~vlmguard_plugins.errors.UnsupportedContentError`, an image it
  cannot load with :class:`~vlmguard_plugins.errors.ImageInputError`, whatever the
  failure policy (the rewriter's ``unsupported_content="drop"`` setting removes
  unsupported blocks instead);
- the rewrite takes the place of the message's first text block, its other text blocks
  are removed, every other block stays where it was; a message with images and no text
  gets the rewrite as a new text block after its images;
- a failed rewrite goes to the failure policy (``risk`` is then ``None``).

With a :class:`~llama_index_vlmguard.VerdictCache` (``cache=``), a conversation state
the rewriter already judged is not sent to it again: the verdict is written back as
the rewriter's answer would be, after the same coverage check.  An agent's steps then
cost a rewriter call only when they bring something new (see
:mod:`llama_index_vlmguard.verdicts`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from llama_index.core.base.llms.types import ChatMessage

from vlmguard_plugins import GuardedConversation, Rewriter, RewriteResult
from vlmguard_plugins.conversation import apply_result, plan
from vlmguard_plugins.types import FailurePolicyName

from .conversation import from_conversation, to_conversation
from .events import dispatch_rewrite
from .verdicts import VerdictCache


class GuardedMessages(NamedTuple):
    """The messages to send to the LLM, and the rewrite that produced them.

    ``result`` is ``None`` when the messages hold no user message (nothing to guard);
    ``dropped`` names the blocks removed under ``unsupported_content="drop"``.
    """

    messages: list[ChatMessage]
    result: RewriteResult | None
    dropped: tuple[str, ...] = ()


def guard_messages(
    messages: Sequence[ChatMessage],
    rewriter: Rewriter,
    *,
    on_error: FailurePolicyName | None = None,
    allow_local_files: bool = True,
    user_text: str | None = None,
    cache: VerdictCache | None = None,
) -> GuardedMessages:
    """Guard ``messages`` before they are sent to an LLM (synchronous).

    Returns a new list; ``messages`` and their blocks are not modified.  ``on_error``
    overrides the rewriter's failure policy for this call.  ``user_text`` names the
    user's own words when the last user message is a template you filled (retrieved
    context around a question): only they are rewritten, the rest is forwarded as it
    is (see :mod:`llama_index_vlmguard.conversation`).  ``cache`` answers a conversation
    state the rewriter already judged without asking it again (a hit has
    ``result.cached``); record your LLM's answers with ``cache.remember_answer``.

    Raises:
        InputError: a subclass from :mod:`vlmguard_plugins.errors` for input the guard
            cannot check, whatever the failure policy.

    Example::

        guarded = guard_messages(messages, rewriter)
        response = llm.chat(guarded.messages)
    """
    key, hit = _lookup(messages, rewriter, cache, allow_local_files, user_text)
    if hit is not None:
        return _messages(hit)
    conversation = to_conversation(
        messages, user_text=user_text, max_image_bytes=rewriter.image_limits.max_bytes
    )
    guarded = rewriter.guard(conversation, on_error=on_error, allow_local_files=allow_local_files)
    return _messages(_kept(guarded, cache, key))


async def aguard_messages(
    messages: Sequence[ChatMessage],
    rewriter: Rewriter,
    *,
    on_error: FailurePolicyName | None = None,
    allow_local_files: bool = True,
    user_text: str | None = None,
    cache: VerdictCache | None = None,
) -> GuardedMessages:
    """Guard ``messages`` (asynchronous); see :func:`guard_messages`."""
    key, hit = _lookup(messages, rewriter, cache, allow_local_files, user_text)
    if hit is not None:
        return _messages(hit)
    conversation = to_conversation(
        messages, user_text=user_text, max_image_bytes=rewriter.image_limits.max_bytes
    )
    guarded = await rewriter.aguard(
        conversation, on_error=on_error, allow_local_files=allow_local_files
    )
    return _messages(_kept(guarded, cache, key))


def _lookup(
    messages: Sequence[ChatMessage],
    rewriter: Rewriter,
    cache: VerdictCache | None,
    allow_local_files: bool,
    user_text: str | None,
) -> tuple[str | None, GuardedConversation | None]:
    """The cache key of the messages' state, and the guarded conversation on a hit.

    The messages are converted without decoding their images (the key identifies them
    by their encoded bytes), so a hit costs no image decoding.  A hit is planned exactly
    as :meth:`~vlmguard_plugins.Rewriter.aguard` plans a conversation, coverage check
    first, so it forwards nothing the core would refuse, and the verdict is written
    back as the rewriter's answer would be.
    """
    if cache is None:
        return None, None
    started = time.perf_counter()
    conversation = to_conversation(
        messages,
        user_text=user_text,
        max_image_bytes=rewriter.image_limits.max_bytes,
        decode_images=False,
    )
    key = cache.key(conversation, rewriter, allow_local_files=allow_local_files)
    verdict = cache.get(key) if key is not None else None
    if verdict is None:
        return key, None
    guard_plan = plan(
        conversation,
        unsupported_content=rewriter.unsupported_content,
        allow_local_files=allow_local_files,
        max_history_turns=rewriter.max_history_turns,
        max_text_chars=rewriter.max_text_chars,
        history_overflow=rewriter.history_overflow,
    )
    if guard_plan.request is None or guard_plan.request.text != verdict.original:
        return key, None  # not the request the verdict answered: ask the rewriter
    result = verdict.model_copy(
        update={"cached": True, "latency_ms": (time.perf_counter() - started) * 1000}
    )
    guarded = GuardedConversation(
        apply_result(guard_plan, result), result, guard_plan.target, guard_plan.dropped
    )
    return key, guarded


def _kept(
    guarded: GuardedConversation, cache: VerdictCache | None, key: str | None
) -> GuardedConversation:
    if cache is not None and key is not None and guarded.result is not None:
        cache.put(key, guarded.result)
    return guarded


def _messages(guarded: GuardedConversation) -> GuardedMessages:
    if guarded.result is not None:
        dispatch_rewrite(guarded.result)
    return GuardedMessages(from_conversation(guarded.conversation), guarded.result, guarded.dropped)


__all__ = ["GuardedMessages", "aguard_messages", "guard_messages"]
