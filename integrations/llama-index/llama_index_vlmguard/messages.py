"""Guard a list of LlamaIndex ``ChatMessage``: rewrite the last user message's text.

The text blocks of the last user message become the rewrite request's text, its
``ImageBlock``s its images, and the earlier user and assistant turns its history.
The rewritten text is written back in place of those text blocks; every other block
(images included) is kept, the very same objects in the same order.

Which image sources are read:

- ``ImageBlock(image=...)``: the bytes (or file-like object) held by the block;
- ``ImageBlock(path=...)``: read from disk.  A path is set by the application's own
  code (LlamaIndex validates at construction that it names an existing file, and the
  LLM reads the same file anyway), so it is allowed by default; pass
  ``allow_local_files=False`` when messages are built from untrusted data, for
  example deserialised from a request body;
- ``ImageBlock(url=...)``: ``data:`` URLs are decoded; http(s) URLs follow the
  rewriter's :class:`~vlmguard_plugins.URLPolicy` (remote fetching is off by
  default); ``file://`` URLs are always refused.

A block is read as LlamaIndex itself resolves it: its bytes first, then its path,
then its URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import IOBase
from pathlib import Path
from typing import Any, NamedTuple

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.utils import resolve_binary

from vlmguard_plugins import HistoryTurn, Rewriter, RewriteRequest, RewriteResult
from vlmguard_plugins.errors import ImageInputError, URLPolicyError, VLMGuardError
from vlmguard_plugins.policy import apply_failure_policy, validate_policy
from vlmguard_plugins.types import MAX_HISTORY_TURNS, FailurePolicyName

from .events import dispatch_rewrite

_ASSISTANT_ROLES = frozenset({MessageRole.ASSISTANT, MessageRole.CHATBOT, MessageRole.MODEL})


class GuardedMessages(NamedTuple):
    """The messages to send to the LLM, and the rewrite that produced them.

    ``result`` is ``None`` when the messages hold no user message (nothing to guard).
    """

    messages: list[ChatMessage]
    result: RewriteResult | None


@dataclass
class _Target:
    """The last user message taken apart."""

    index: int
    request: RewriteRequest
    image_error: VLMGuardError | None


def guard_messages(
    messages: Sequence[ChatMessage],
    rewriter: Rewriter,
    *,
    on_error: FailurePolicyName | None = None,
    allow_local_files: bool = True,
) -> GuardedMessages:
    """Rewrite the last user message of ``messages`` (synchronous).

    Returns a new list; ``messages`` and their blocks are not modified.  ``on_error``
    overrides the rewriter's failure policy for this call; with ``raise`` the typed
    error from :mod:`vlmguard_plugins.errors` propagates.

    Example::

        guarded = guard_messages(messages, rewriter)
        response = llm.chat(guarded.messages)
    """
    target = _find_target(messages, rewriter, allow_local_files)
    if target is None:
        return GuardedMessages(list(messages), None)
    if target.image_error is not None:
        result = _fail(target.image_error, target.request.text, rewriter, on_error)
    else:
        result = rewriter.rewrite(target.request, on_error=on_error)
    return _rebuild(messages, target, result)


async def aguard_messages(
    messages: Sequence[ChatMessage],
    rewriter: Rewriter,
    *,
    on_error: FailurePolicyName | None = None,
    allow_local_files: bool = True,
) -> GuardedMessages:
    """Rewrite the last user message of ``messages`` (asynchronous); see :func:`guard_messages`."""
    target = _find_target(messages, rewriter, allow_local_files)
    if target is None:
        return GuardedMessages(list(messages), None)
    if target.image_error is not None:
        result = _fail(target.image_error, target.request.text, rewriter, on_error)
    else:
        result = await rewriter.arewrite(target.request, on_error=on_error)
    return _rebuild(messages, target, result)


def message_text(message: ChatMessage) -> str:
    """The text blocks of ``message`` joined with newlines (empty blocks skipped)."""
    return "\n".join(
        block.text for block in message.blocks if isinstance(block, TextBlock) and block.text
    )


def image_source(block: ImageBlock, max_bytes: int | None = None) -> Any:
    """What the core loader should read for ``block``: bytes, a ``Path`` or a URL string.

    A file-like ``image`` is read from its start, at most ``max_bytes + 1`` bytes (enough
    for the core to refuse an oversized image without reading all of it), and left at
    the position it had.

    Raises:
        ImageInputError: the block holds no image at all.
        URLPolicyError: its ``url`` is not a URL (a bare path placed in the URL field).
    """
    if isinstance(block.image, IOBase):
        position = block.image.tell()
        block.image.seek(0)
        data = block.image.read(-1 if max_bytes is None else max_bytes + 1)
        block.image.seek(position)  # the LLM reads the same stream after us
        return data
    if block.image:
        # ImageBlock stores the bytes it was given base64-encoded; this undoes that.
        return resolve_binary(raw_bytes=block.image).read()
    if block.path is not None:
        return Path(block.path)
    if block.url is not None:
        url = str(block.url)
        if not url[:5].lower().startswith("data:") and "://" not in url[:16]:
            raise URLPolicyError(
                f"refused image source {url!r}: ImageBlock.url must be a URL; "
                "put a file's location in ImageBlock.path"
            )
        return url
    raise ImageInputError("an ImageBlock holds no image: set its image, path or url")


def _find_target(
    messages: Sequence[ChatMessage], rewriter: Rewriter, allow_local_files: bool
) -> _Target | None:
    index = next(
        (i for i in reversed(range(len(messages))) if messages[i].role == MessageRole.USER),
        None,
    )
    if index is None:
        return None
    images: list[Any] = []
    image_error: VLMGuardError | None = None
    for block in messages[index].blocks:
        if isinstance(block, ImageBlock):
            try:
                images.append(image_source(block, rewriter.image_limits.max_bytes))
            except VLMGuardError as error:
                image_error = image_error or error
    request = RewriteRequest(
        text=message_text(messages[index]),
        images=images,
        history=_history(messages[:index]),
        allow_local_files=allow_local_files,
    )
    return _Target(index=index, request=request, image_error=image_error)


def _history(messages: Sequence[ChatMessage]) -> list[HistoryTurn]:
    turns = []
    for message in messages:
        if message.role != MessageRole.USER and message.role not in _ASSISTANT_ROLES:
            continue  # system prompts and tool results are not the conversation
        text = message_text(message)
        if text.strip():
            role = "user" if message.role == MessageRole.USER else "assistant"
            turns.append(HistoryTurn(role=role, text=text))
    return turns[-MAX_HISTORY_TURNS:]


def _fail(
    error: VLMGuardError, text: str, rewriter: Rewriter, on_error: FailurePolicyName | None
) -> RewriteResult:
    """The failure policy's answer to an image the guard could not even hand to the core."""
    policy = validate_policy(on_error) if on_error else rewriter.on_error
    return apply_failure_policy(policy, text, error)


def _rebuild(
    messages: Sequence[ChatMessage], target: _Target, result: RewriteResult
) -> GuardedMessages:
    dispatch_rewrite(result)
    guarded = list(messages)
    if result.changed:
        original = messages[target.index]
        guarded[target.index] = original.model_copy(
            update={"blocks": write_text(original.blocks, result.prompt)}
        )
    return GuardedMessages(guarded, result)


def write_text(blocks: Sequence[Any], prompt: str) -> list[Any]:
    """``blocks`` with their text replaced by ``prompt``; every other block kept in place.

    The rewritten text takes the place of the first text block; further text blocks
    (already part of the rewritten text) are dropped.  With no text block at all, the
    text is put first.
    """
    rewritten: list[Any] = []
    placed = False
    for block in blocks:
        if not isinstance(block, TextBlock):
            rewritten.append(block)
        elif not placed:
            rewritten.append(block.model_copy(update={"text": prompt}))
            placed = True
    if not placed:
        rewritten.insert(0, TextBlock(text=prompt))
    return rewritten
