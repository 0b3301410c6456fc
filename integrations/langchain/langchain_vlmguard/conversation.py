"""LangChain messages <-> the core :class:`~vlmguard_plugins.conversation.Conversation`.

The adapter's only translation layer: it says what each LangChain message and content
block *is* (text, an image and where to read it, or something else), never whether it
may pass.  Coverage, the rewriter's request and where the rewrite goes are the core's
(:meth:`vlmguard_plugins.Rewriter.aguard`).

Roles: ``HumanMessage`` is a user turn, ``AIMessage`` an assistant turn,
``SystemMessage`` a system turn, ``ToolMessage`` and ``FunctionMessage`` tool turns,
and a ``ChatMessage`` takes the role it names (an unknown role counts as a user turn,
so its text is read).

Content blocks:

- text: a bare string, ``{"type": "text", "text": ...}`` (v0 and v1), OpenAI
  Responses ``input_text`` / ``output_text``;
- images: OpenAI ``image_url`` (a string or ``{"url": ...}``) and ``input_image``,
  LangChain v1 ``image``
  (``base64`` + ``mime_type``, ``url``, ``file_id``), LangChain v0 ``image`` with
  ``source_type`` (``base64``, ``url``, ``id``) and Anthropic ``image`` with a
  ``source`` (``base64``, ``url``, ``file``); base64 data becomes a ``data:`` URL, a
  ``data:`` URL stays one.  An image named only by a provider file id becomes an
  :class:`~vlmguard_plugins.conversation.ImagePart` with no source and a ``problem``:
  the core refuses it, since the guard cannot look at it;
- everything else (``audio``, ``video``, ``file``, ``text-plain``, ``tool_call``,
  ``reasoning``, ``non_standard``, OpenAI ``input_audio``, unknown types) becomes an
  :class:`~vlmguard_plugins.conversation.OtherPart` named by its ``type``, for the
  core to refuse, drop or (for an assistant's own tool calls and reasoning) pass;
- a ``non_standard`` block (LangChain's wrapper for a provider's own block) is read as
  the block it wraps.

Back-conversion returns the very same message object for every turn the guard did
not change, and for the rewritten turn a copy that keeps its type, ``id``, ``name``,
``additional_kwargs``, tool calls and every block it did not change (the same
objects), with the outcome under ``response_metadata["vlmguard"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)

from vlmguard_plugins import RewriteResult
from vlmguard_plugins.conversation import (
    Conversation,
    ImagePart,
    OtherPart,
    Part,
    Role,
    TextPart,
    Turn,
)
from vlmguard_plugins.conversation.openai_format import (
    IMAGE_TYPES,
    TEXT_TYPES,
    part_from_openai,
    role_of,
)
from vlmguard_plugins.errors import InputError

METADATA_KEY = "vlmguard"
"""Key of the rewrite's outcome in the rewritten message's ``response_metadata``."""

_UNKNOWN_MIME = "application/octet-stream"


# --- LangChain -> core ------------------------------------------------------------------


def role_of_message(message: BaseMessage) -> Role:
    """The guard's role for a LangChain message (chunks count as their message type)."""
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, (ToolMessage, FunctionMessage)):
        return "tool"
    if isinstance(message, ChatMessage):
        return role_of(message.role)
    return role_of(message.type)


def part_from_block(block: Any) -> Part:
    """One LangChain content block (a dict, or a bare string) as a core part."""
    if isinstance(block, str):
        return TextPart(block, raw=block)
    if not isinstance(block, Mapping):
        return OtherPart(type(block).__name__, raw=block)
    kind = block.get("type")
    if kind in TEXT_TYPES or kind in IMAGE_TYPES:
        # OpenAI's shapes (Chat Completions and Responses), which LangChain passes on
        # as they are: the core's own OpenAI converter reads them.
        return part_from_openai(block)
    if kind == "image":
        return _image_block(block)
    if kind == "non_standard" and isinstance(block.get("value"), Mapping):
        return _non_standard(block)
    return OtherPart(str(kind) if kind is not None else "block without a type", raw=block)


def _non_standard(block: Mapping[str, Any]) -> Part:
    """A provider block LangChain wraps as ``{"type": "non_standard", "value": {...}}``.

    It is read as the block it wraps, so a wrapped image is checked and a wrapped video
    is refused by its own name; the part keeps the wrapper as its ``raw``.
    """
    inner = part_from_block(block["value"])
    if isinstance(inner, TextPart):
        return TextPart(inner.text, raw=block)
    if isinstance(inner, ImagePart):
        return ImagePart(inner.source, raw=block, problem=inner.problem)
    return OtherPart(inner.kind, raw=block)


def image_part(value: Any) -> Part:
    """An image given as a prompt variable: a block, a URL, bare base64, bytes or a PIL image.

    A string that is neither a ``data:`` nor a URL but is valid base64 is taken as the
    image's data, the form a ``data:image/png;base64,{image}`` template expects.  Any
    other string is given to the core as it is, which refuses local paths.
    """
    if isinstance(value, Mapping):
        return part_from_block(value)
    if isinstance(value, str) and _is_bare_base64(value):
        return ImagePart(_data_url(value.strip(), None), raw=value)
    return ImagePart(value, raw=value)


def turn_from_message(message: BaseMessage) -> Turn:
    """One message as a turn; the message object is kept as the turn's ``raw``."""
    content = message.content
    role = role_of_message(message)
    source_role = message.role if isinstance(message, ChatMessage) else message.type
    if isinstance(content, str):
        return Turn(
            role, (TextPart(content),), raw=message, text_only=True, source_role=source_role
        )
    parts = tuple(part_from_block(block) for block in content)
    return Turn(role, parts, raw=message, source_role=source_role)


def to_conversation(messages: Iterable[BaseMessage]) -> Conversation:
    """LangChain messages as a conversation."""
    return Conversation(tuple(turn_from_message(message) for message in messages))


def prompt_variables_turn(text: str, images: Any = None) -> Turn:
    """The one user turn of a dict of prompt variables: the user's text, then its images.

    ``images`` is one image or a list of them, in any form :func:`image_part` accepts.
    """
    if images is None:
        items: list[Any] = []
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    return Turn("user", (TextPart(text), *(image_part(item) for item in items)))


_IMAGE_SOURCE_KEYS = ("source", "base64", "data", "url", "file_id", "image")
"""Fields that name an image's data.  LangChain's own provider converters and the
guard would not necessarily read the same one, so a block must name exactly one."""


def _sources_named(block: Mapping[str, Any]) -> list[str]:
    keys: tuple[str, ...] = _IMAGE_SOURCE_KEYS
    if "source_type" in block:  # v0 blocks: the data sits in data, url or id
        keys = (*keys, "id")  # (in v1 blocks ``id`` is the block's own id, not data)
    return [key for key in keys if block.get(key) not in (None, "")]


def _image_block(block: Mapping[str, Any]) -> ImagePart:
    named = _sources_named(block)
    if len(named) > 1:
        return ImagePart(
            None, raw=block, problem=f"an image block naming several sources {sorted(named)}"
        )
    if "source_type" in block:  # LangChain v0 multimodal block
        source_type = block["source_type"]
        if source_type == "base64" and isinstance(block.get("data"), str):
            return ImagePart(_data_url(block["data"], block.get("mime_type")), raw=block)
        if source_type == "url" and isinstance(block.get("url"), str):
            return ImagePart(block["url"], raw=block)
        if source_type == "id":
            return _file_image(block, block.get("id"))
        return ImagePart(None, raw=block, problem=f"an image with source_type {source_type!r}")
    source = block.get("source")
    if isinstance(source, Mapping):  # Anthropic's format, which LangChain also accepts
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return ImagePart(_data_url(source["data"], source.get("media_type")), raw=block)
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return ImagePart(source["url"], raw=block)
        if source.get("type") == "file":
            return _file_image(block, source.get("file_id"))
        return ImagePart(None, raw=block, problem=f"an image source of type {source.get('type')!r}")
    if isinstance(block.get("base64"), str):  # LangChain v1 standard block
        return ImagePart(_data_url(block["base64"], block.get("mime_type")), raw=block)
    if isinstance(block.get("url"), str):
        return ImagePart(block["url"], raw=block)
    if "file_id" in block:
        return _file_image(block, block.get("file_id"))
    return ImagePart(None, raw=block, problem="an 'image' block without base64 data or a URL")


def _file_image(block: Mapping[str, Any], file_id: Any) -> ImagePart:
    return ImagePart(
        None, raw=block, problem=f"an image given by file id {file_id!r}, which cannot be fetched"
    )


def _data_url(payload: str, mime_type: Any) -> str:
    if payload[:5].lower() == "data:":  # already a data URL, placed in a base64 field
        return payload
    mime = mime_type if isinstance(mime_type, str) and mime_type else _UNKNOWN_MIME
    return f"data:{mime};base64,{payload}"


_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _is_bare_base64(text: str) -> bool:
    text = text.strip()
    if len(text) < 16 or len(text) % 4 or text[:5].lower() == "data:" or "://" in text[:16]:
        return False
    body = text.rstrip("=")
    return len(text) - len(body) <= 2 and "=" not in body and set(body) <= _BASE64_ALPHABET


# --- core -> LangChain ------------------------------------------------------------------


def block_from_part(part: Part) -> Any:
    """A core part back as a content block: its own object when the guard did not change it."""
    if isinstance(part, TextPart):
        if part.raw is None:
            return {"type": "text", "text": part.text}
        if isinstance(part.raw, str):
            return part.text
        if part.raw.get("type") == "non_standard":
            wrapped = part.raw["value"]
            if wrapped.get("text") == part.text:
                return part.raw
            return {**part.raw, "value": {**wrapped, "text": part.text}}
        if part.raw.get("text") == part.text:
            return part.raw
        return {**part.raw, "text": part.text}
    return part.raw


def content_from_turn(turn: Turn) -> str | list[Any]:
    """A turn's parts as message content: a string when it was (and still is) one text."""
    if turn.text_only and len(turn.parts) == 1 and isinstance(turn.parts[0], TextPart):
        return turn.parts[0].text
    return [block_from_part(part) for part in turn.parts]


def message_from_turn(turn: Turn, result: RewriteResult | None = None) -> BaseMessage:
    """A turn back as a LangChain message.

    A turn that came from a message and whose content is unchanged is that very message
    (unless ``result`` is given).  ``result``, the outcome of the rewrite of this turn,
    is stored under ``response_metadata["vlmguard"]``.
    """
    content = content_from_turn(turn)
    message = turn.raw
    if not isinstance(message, BaseMessage):
        message = _new_message(turn.source_role or turn.role, content)
        unchanged = True
    else:
        unchanged = _same_content(message.content, content)
    if unchanged and result is None:
        return message
    update: dict[str, Any] = {} if unchanged else {"content": content}
    if result is not None:
        update["response_metadata"] = {
            **message.response_metadata,
            METADATA_KEY: result_summary(result),
        }
    return message.model_copy(update=update)


def from_conversation(
    conversation: Conversation,
    *,
    result: RewriteResult | None = None,
    target: int | None = None,
) -> list[BaseMessage]:
    """A conversation back as LangChain messages; ``result`` goes onto turn ``target``."""
    return [
        message_from_turn(turn, result if index == target else None)
        for index, turn in enumerate(conversation)
    ]


def _same_content(old: str | list[Any], new: str | list[Any]) -> bool:
    if isinstance(old, str) or isinstance(new, str):
        return old == new
    # Identity, not equality: an untouched block is the very same object.
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))


def _new_message(role: str, content: str | list[Any]) -> BaseMessage:
    if role in ("assistant", "ai"):
        return AIMessage(content=content)
    if role == "system":
        return SystemMessage(content=content)
    if role in ("user", "human"):
        return HumanMessage(content=content)
    return ChatMessage(role=role, content=content)


# --- the outcome on the message ---------------------------------------------------------


def result_summary(result: RewriteResult) -> dict[str, Any]:
    """The result as plain JSON data (without the raw model output), for metadata and events."""
    return result.model_dump(mode="json", exclude={"raw"})


def get_rewrite_result(message: BaseMessage) -> RewriteResult | None:
    """The :class:`~vlmguard_plugins.RewriteResult` stored on a message the guard rewrote.

    Returns ``None`` for a message the guard did not rewrite (a speculative answer to a
    conversation with nothing to guard carries only its ``speculative`` outcome).
    """
    data = message.response_metadata.get(METADATA_KEY)
    if isinstance(data, Mapping) and "prompt" in data:
        return RewriteResult.model_validate(data)
    return None


def as_messages(value: Sequence[Any]) -> list[BaseMessage]:
    """Message-like values (messages, ``(role, text)`` tuples, dicts) as LangChain messages.

    Raises:
        InputError: a value LangChain cannot read as a message.
    """
    try:
        return convert_to_messages(value)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InputError(f"the input is not a list of chat messages: {exc}") from exc


__all__ = [
    "METADATA_KEY",
    "as_messages",
    "block_from_part",
    "content_from_turn",
    "from_conversation",
    "get_rewrite_result",
    "image_part",
    "message_from_turn",
    "part_from_block",
    "prompt_variables_turn",
    "result_summary",
    "role_of_message",
    "to_conversation",
    "turn_from_message",
]
