"""OpenAI-style messages <-> :class:`Conversation`.

One converter for every dict-shaped message format the project accepts: Chat
Completions (``text``, ``image_url``, ``input_audio``, ``file``, ``refusal``...), the
Responses-style parts (``input_text``, ``input_image``, ``input_file``, ``output_text``),
and NeMo Guardrails' message dicts, which use the same shapes.  Anything else in a
content list becomes an :class:`OtherPart` named by its ``type``, for the core to
refuse or drop.  Every message field and part field is kept; only a rewritten text
part changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .model import Conversation, ImagePart, OtherPart, Part, Role, TextPart, Turn

TEXT_TYPES = frozenset({"text", "input_text", "output_text"})
IMAGE_TYPES = frozenset({"image_url", "input_image"})

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
    "tool": "tool",
    "function": "tool",
}


def role_of(name: Any) -> Role:
    """The guard's role for a message role name, spelt exactly.

    An unknown role (``System`` included: the name is forwarded as spelt, and a chat
    template renders it verbatim) counts as ``user``: its text is then read by the
    rewriter rather than passed unread.
    """
    return _ROLES.get(name, "user") if isinstance(name, str) else "user"


def part_from_openai(part: Any) -> Part:
    """One content part (a dict, or a bare string some clients send) as a core part."""
    if isinstance(part, str):
        return TextPart(part, raw=part)
    if not isinstance(part, Mapping):
        return OtherPart(type(part).__name__, raw=part)
    kind = part.get("type")
    if kind in TEXT_TYPES:
        text = part.get("text")
        if not isinstance(text, str):
            return OtherPart(f"{kind} without a text string", raw=part)
        if _SOURCE_KEYS.intersection(part):
            # A lenient server might read the extra field as content of its own.
            return OtherPart(f"{kind} carrying {sorted(_SOURCE_KEYS.intersection(part))}", raw=part)
        return TextPart(text, raw=part)
    if kind in IMAGE_TYPES:
        return _image_part(part)
    return OtherPart(str(kind) if kind is not None else "part without a type", raw=part)


_SOURCE_KEYS = frozenset(
    {"image_url", "image", "url", "data", "base64", "file", "file_id", "input_audio", "video_url"}
)
"""Fields that carry content of their own: a part holds exactly one source."""


def _image_part(part: Mapping[str, Any]) -> ImagePart:
    extra = (_SOURCE_KEYS - {"image_url", "file_id"}).intersection(part)
    if extra:
        return ImagePart(
            None, raw=part, problem=f"an image part with extra sources {sorted(extra)}"
        )
    if "uuid" in part:
        # Some servers (vLLM) reuse a cached image by a client-chosen id instead of the
        # data sent: the model could see a different image than the guard.
        return ImagePart(None, raw=part, problem="an image part with a client-chosen uuid")
    inner = part.get("image_url")
    if isinstance(inner, Mapping) and (_SOURCE_KEYS - {"url"}).intersection(inner):
        return ImagePart(None, raw=part, problem="an image_url with more than one source")
    url = inner.get("url") if isinstance(inner, Mapping) else inner
    if isinstance(url, str) and url.strip():
        return ImagePart(url, raw=part)
    if isinstance(part.get("file_id"), str):
        return ImagePart(None, raw=part, problem=f"file id {part['file_id']!r} cannot be fetched")
    return ImagePart(None, raw=part, problem=f"a {part.get('type')!r} part without a URL")


def turn_from_openai(message: Mapping[str, Any]) -> Turn:
    """One message dict as a turn (its object kept as ``raw``)."""
    source_role = message.get("role")
    content = message.get("content")
    role = role_of(source_role)
    if content is None:
        parts: tuple[Part, ...] = ()
        text_only = False
    elif isinstance(content, str):
        parts, text_only = (TextPart(content),), True
    elif isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        parts, text_only = tuple(part_from_openai(part) for part in content), False
    else:
        parts, text_only = (OtherPart(f"content of type {type(content).__name__}"),), False
    return Turn(role, parts, raw=message, text_only=text_only, source_role=str(source_role))


def from_openai(messages: Sequence[Mapping[str, Any]]) -> Conversation:
    """A list of OpenAI-style message dicts as a conversation."""
    turns = []
    for message in messages:
        if not isinstance(message, Mapping):
            turns.append(Turn("user", (OtherPart(f"message of type {type(message).__name__}"),)))
            continue
        turns.append(turn_from_openai(message))
    return Conversation(tuple(turns))


def part_to_openai(part: Part) -> Any:
    """A core part back as a content part (its own object when it was not rewritten)."""
    if isinstance(part, TextPart):
        if isinstance(part.raw, str) or part.raw is None:
            return part.text if isinstance(part.raw, str) else {"type": "text", "text": part.text}
        if part.raw.get("text") == part.text:
            return part.raw
        return {**part.raw, "text": part.text}
    return part.raw


def content_to_openai(turn: Turn) -> Any:
    """A turn's parts as message content: a string when it was (and still is) one text."""
    if turn.text_only and len(turn.parts) == 1 and isinstance(turn.parts[0], TextPart):
        return turn.parts[0].text
    if not turn.parts and isinstance(turn.raw, Mapping) and not turn.raw.get("content"):
        return turn.raw.get("content")
    return [part_to_openai(part) for part in turn.parts]


def turn_to_openai(turn: Turn) -> dict[str, Any]:
    """A turn back as a message dict: its own fields, with the content written back."""
    base = (
        dict(turn.raw) if isinstance(turn.raw, Mapping) else {"role": turn.source_role or turn.role}
    )
    base["content"] = content_to_openai(turn)
    return base


def to_openai(conversation: Conversation) -> list[dict[str, Any]]:
    """A conversation back as OpenAI-style message dicts."""
    return [turn_to_openai(turn) for turn in conversation]


__all__ = [
    "IMAGE_TYPES",
    "TEXT_TYPES",
    "content_to_openai",
    "from_openai",
    "part_from_openai",
    "part_to_openai",
    "role_of",
    "to_openai",
    "turn_from_openai",
    "turn_to_openai",
]
