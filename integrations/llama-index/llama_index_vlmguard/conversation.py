"""LlamaIndex ``ChatMessage`` lists <-> the core :class:`~vlmguard_plugins.Conversation`.

This converter is the adapter's only view of message content.  What the rewriter must
read, what is refused and where the rewrite goes are the core's decisions
(:mod:`vlmguard_plugins.conversation`); the converter only says what each block is:

- ``TextBlock`` -> :class:`~vlmguard_plugins.TextPart`;
- ``ImageBlock`` -> :class:`~vlmguard_plugins.ImagePart` (sources below);
- every other block (``DocumentBlock``, ``AudioBlock``, ``VideoBlock``, ``CachePoint``,
  ``CitableBlock``, ``ThinkingBlock``, ``ToolCallBlock``, anything newer) ->
  :class:`~vlmguard_plugins.OtherPart` named by its class.

Roles: ``user`` -> user; ``assistant``, ``chatbot``, ``model`` -> assistant; ``system``,
``developer`` -> system; ``tool``, ``function`` -> tool.

Which image sources are read (a block is read as LlamaIndex itself resolves it: its
bytes first, then its path, then its URL):

- ``ImageBlock(image=...)``: the bytes (or file-like object) held by the block;
- ``ImageBlock(path=...)``: read from disk only when the guard is called with
  ``allow_local_files=True``.  A path is set by the application's own code (LlamaIndex
  checks at construction that it names an existing file, and the LLM reads the same
  file anyway), so the adapters allow it by default; turn it off when messages are
  built from untrusted data, for example deserialised from a request body;
- ``ImageBlock(url=...)``: ``data:`` URLs are decoded; http(s) URLs follow the
  rewriter's :class:`~vlmguard_plugins.URLPolicy` (remote fetching is off by default);
  ``file://`` URLs and bare paths put in the URL field are always refused.

**The user's words inside a template.**  Query and chat engines send the LLM a prompt
they built: a template filled with retrieved context and the user's question.  When
``user_text`` is given and occurs exactly once in the text blocks of the last user
message, only those words are the user's: the rewriter reads them (with every image of
the conversation) and the rewrite takes their place, while the template and the
retrieved text around them reach the LLM as they were.  Otherwise the whole message is
the user's, as for a message a person typed.

``decode_images=False`` leaves the images an ``ImageBlock`` holds as bytes in their
base64 form (:class:`EncodedImage`), undecoded: a conversation converted so is for
checking coverage and telling conversations apart (the verdict cache), never for the
rewriter to read.

Back-conversion keeps each message's role and ``additional_kwargs`` and the very same
block objects for every part the guard did not change; a message with nothing changed
is returned as the same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import IOBase
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.utils import resolve_binary

from vlmguard_plugins import Conversation, ImagePart, OtherPart, TextPart, Turn
from vlmguard_plugins.conversation import Part, Role
from vlmguard_plugins.errors import UnsupportedContentError, URLPolicyError

ROLES: dict[MessageRole, Role] = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
"""LlamaIndex's message roles as the guard's roles."""

_ROLE_NAMES: dict[Any, str] = {role: role.value for role in MessageRole}


@dataclass(frozen=True)
class EncodedImage:
    """An ``ImageBlock``'s bytes as the block holds them (base64), not decoded.

    What :func:`to_conversation` puts in an :class:`~vlmguard_plugins.ImagePart` with
    ``decode_images=False``: it identifies the image without the cost of decoding it,
    and the core image loader does not read it.
    """

    data: bytes


@dataclass(frozen=True)
class UserWords:
    """Where the user's words sit inside a filled template: ``block.text[start:end]``.

    The ``raw`` of the :class:`~vlmguard_plugins.TextPart` that stands for those words;
    the other text blocks of the message are the template's and are not parts at all.
    """

    block: TextBlock
    start: int
    end: int


def role_of(role: MessageRole | str) -> Role:
    """The guard's role for a LlamaIndex role.

    An unknown role counts as ``user``, so its text is read by the rewriter rather than
    passed unread.
    """
    if isinstance(role, MessageRole):
        return ROLES[role]
    try:
        return ROLES[MessageRole(role)]
    except ValueError:
        return "user"


def image_source(block: ImageBlock, max_bytes: int | None = None, *, decode: bool = True) -> Any:
    """What the core image loader reads for ``block``: bytes, a ``Path`` or a URL string.

    A file-like ``image`` is read from its start, at most ``max_bytes + 1`` bytes (enough
    for the core to refuse an oversized image without reading all of it), and left at
    the position it had.  With ``decode=False`` the bytes the block holds are given as
    an :class:`EncodedImage`, undecoded.  Returns ``None`` when the block holds no image.

    Raises:
        URLPolicyError: its ``url`` is not a URL (a bare path put in the URL field).
    """
    if isinstance(block.image, IOBase):
        position = block.image.tell()
        block.image.seek(0)
        data = block.image.read(-1 if max_bytes is None else max_bytes + 1)
        block.image.seek(position)  # the LLM reads the same stream after the guard
        return data
    if block.image:
        if not decode:
            return EncodedImage(block.image)
        # ImageBlock stores the bytes it was given base64-encoded; this undoes that.
        return resolve_binary(raw_bytes=block.image).read()
    if block.path is not None:
        return block.path if isinstance(block.path, Path) else Path(block.path)
    if block.url is not None:
        url = str(block.url)
        if not url[:5].lower().startswith("data:") and "://" not in url[:16]:
            # Only the path field may name a file: a URL field is data from anywhere.
            raise URLPolicyError(
                f"refused image source {url!r}: ImageBlock.url must be a URL; "
                "put a file's location in ImageBlock.path"
            )
        return url
    return None


def part_from_block(
    block: Any, *, max_image_bytes: int | None = None, decode_images: bool = True
) -> Part:
    """One content block as a core part (the block kept as the part's ``raw``)."""
    if isinstance(block, TextBlock):
        return TextPart(block.text, raw=block)
    if isinstance(block, ImageBlock):
        named = [name for name in ("image", "path", "url") if getattr(block, name)]
        if len(named) > 1:
            # LLM integrations differ in which one they send (some prefer the URL): the
            # model could receive a source the guard did not read.
            return ImagePart(None, raw=block, problem=f"an ImageBlock with several sources {named}")
        source = image_source(block, max_image_bytes, decode=decode_images)
        if source is None:
            return ImagePart(None, raw=block, problem="an ImageBlock holds no image")
        return ImagePart(source, raw=block)
    return OtherPart(type(block).__name__, raw=block)


def find_user_text(message: ChatMessage, user_text: str | None) -> UserWords | None:
    """Where ``user_text`` occurs in ``message``'s text blocks, when it occurs exactly once.

    Twice or more (the context quotes the question, the user repeated it) and the guard
    cannot tell the user's words from the rest: ``None``, and the whole message is the
    user's.
    """
    if not user_text or not user_text.strip():
        return None
    found: UserWords | None = None
    for block in message.blocks:
        if not isinstance(block, TextBlock):
            continue
        count = block.text.count(user_text)
        if count == 0:
            continue
        if count > 1 or found is not None:
            return None
        start = block.text.index(user_text)
        found = UserWords(block, start, start + len(user_text))
    return found


_CONTENT_KWARGS = frozenset({"content", "role", "images", "image", "audio", "input_audio"})
"""``additional_kwargs`` keys that carry or replace a message's content when sent."""


def turn_from_message(
    message: ChatMessage,
    *,
    max_image_bytes: int | None = None,
    words: UserWords | None = None,
    decode_images: bool = True,
) -> Turn:
    """One message as a turn; with ``words``, only they are the message's text."""
    parts: list[Part] = []
    for block in message.blocks:
        if words is not None and isinstance(block, TextBlock):
            if block is words.block:
                parts.append(TextPart(block.text[words.start : words.end], raw=words))
            continue  # the template's text: forwarded as it is, not the user's to rewrite
        parts.append(
            part_from_block(block, max_image_bytes=max_image_bytes, decode_images=decode_images)
        )
    overriding = sorted(_CONTENT_KWARGS.intersection(message.additional_kwargs or {}))
    if overriding:
        # LLM integrations merge additional_kwargs into the message they send, so these
        # keys would replace what the guard read; dropping a part cannot remove them.
        raise UnsupportedContentError(
            f"a {role_of(message.role)} message carries {overriding} in additional_kwargs, "
            "which LLM integrations send in place of its blocks; put the content in blocks",
            part_type=f"additional_kwargs {overriding}",
            role=role_of(message.role),
        )
    role = message.role
    return Turn(
        role_of(role),
        tuple(parts),
        raw=message,
        source_role=_ROLE_NAMES.get(role) or str(role),
    )


def to_conversation(
    messages: Sequence[ChatMessage],
    *,
    user_text: str | None = None,
    max_image_bytes: int | None = None,
    decode_images: bool = True,
) -> Conversation:
    """A list of ``ChatMessage`` as a core conversation.

    ``user_text``: the user's own words when the last user message is a filled template
    (see the module's docstring).  ``max_image_bytes`` bounds how much of a file-like
    image is read (the rewriter's byte limit).  ``decode_images=False``: see
    :class:`EncodedImage`.
    """
    target = last_user_index(messages) if user_text else None
    words = find_user_text(messages[target], user_text) if target is not None else None
    return Conversation(
        tuple(
            turn_from_message(
                message,
                max_image_bytes=max_image_bytes,
                words=words if index == target else None,
                decode_images=decode_images,
            )
            for index, message in enumerate(messages)
        )
    )


def last_user_index(messages: Sequence[ChatMessage]) -> int | None:
    """The position of the last user message (the one the core rewrites)."""
    for index in range(len(messages) - 1, -1, -1):
        if role_of(messages[index].role) == "user":
            return index
    return None


def block_from_part(part: Part) -> Any:
    """A core part back as a block: its own block when the guard did not change it."""
    if isinstance(part, TextPart):
        if isinstance(part.raw, TextBlock):
            if part.raw.text == part.text:
                return part.raw
            return part.raw.model_copy(update={"text": part.text})
        return TextBlock(text=part.text)
    return part.raw


def message_from_turn(turn: Turn) -> ChatMessage:
    """A turn back as a ``ChatMessage``: the original message when nothing changed."""
    message = turn.raw if isinstance(turn.raw, ChatMessage) else None
    if message is None:
        return ChatMessage(role=turn.source_role or turn.role, blocks=_blocks(turn.parts))
    if _untouched(turn.parts, message.blocks):
        return message
    if any(isinstance(part, TextPart) and isinstance(part.raw, UserWords) for part in turn.parts):
        blocks = _blocks_around_user_words(message.blocks, turn.parts)
    else:
        blocks = _blocks(turn.parts)
    return message.model_copy(update={"blocks": blocks})


def from_conversation(conversation: Conversation) -> list[ChatMessage]:
    """A core conversation back as a list of ``ChatMessage``."""
    return [message_from_turn(turn) for turn in conversation]


def _untouched(parts: Sequence[Part], blocks: Sequence[Any]) -> bool:
    """Whether ``parts`` are exactly ``blocks``, unchanged (the common case: a fast path)."""
    if len(parts) != len(blocks):
        return False
    for part, block in zip(parts, blocks, strict=True):
        if part.raw is not block:
            return False
        if isinstance(part, TextPart) and part.text != block.text:
            return False
    return True


def _blocks(parts: Sequence[Part]) -> list[Any]:
    return [block_from_part(part) for part in parts]


def _blocks_around_user_words(original: Sequence[Any], parts: Sequence[Part]) -> list[Any]:
    """The message's blocks with the user's words rewritten and the template's text kept.

    The core only replaces the words' text or removes parts (``unsupported_content=
    "drop"``), so the parts are the original's non-template blocks, in order, minus
    the removed ones.
    """
    blocks: list[Any] = []
    position = 0
    for block in original:
        part = parts[position] if position < len(parts) else None
        if isinstance(part, TextPart) and isinstance(part.raw, UserWords):
            if part.raw.block is block:
                blocks.append(_rewrite_words(part.raw, part.text))
                position += 1
                continue
        elif part is not None and part.raw is block:
            blocks.append(block)
            position += 1
            continue
        if isinstance(block, TextBlock):
            blocks.append(block)  # the template's own text
    blocks.extend(block_from_part(part) for part in parts[position:])
    return blocks


def _rewrite_words(words: UserWords, text: str) -> TextBlock:
    block = words.block
    if block.text[words.start : words.end] == text:
        return block
    return block.model_copy(
        update={"text": block.text[: words.start] + text + block.text[words.end :]}
    )


__all__ = [
    "ROLES",
    "EncodedImage",
    "UserWords",
    "block_from_part",
    "find_user_text",
    "from_conversation",
    "image_source",
    "last_user_index",
    "message_from_turn",
    "part_from_block",
    "role_of",
    "to_conversation",
    "turn_from_message",
]
