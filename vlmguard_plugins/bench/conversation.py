"""inspect_ai chat messages <-> the core :class:`~vlmguard_plugins.conversation.Conversation`.

The defences read and write a sample's messages only through this converter and the
core's coverage and write-back, so a benchmark prompt is guarded exactly as a user's
request is at every other entry point: images keep their position, the rewrite takes
the place of the first text part, and a part the guard cannot read (audio, video, a
document) is refused by the core, never sent to the target unread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    Content,
    ContentImage,
    ContentText,
)

from ..conversation import Conversation, ImagePart, OtherPart, Part, Role, TextPart, Turn
from ..images import load_image

_ROLES: dict[type[ChatMessage], Role] = {
    ChatMessageSystem: "system",
    ChatMessageUser: "user",
    ChatMessageAssistant: "assistant",
    ChatMessageTool: "tool",
}


def _part(content: Content) -> Part:
    if isinstance(content, ContentText):
        return TextPart(content.text, raw=content)
    if isinstance(content, ContentImage):
        return ImagePart(content.image, raw=content)
    return OtherPart(content.type, raw=content)


def to_conversation(messages: Sequence[ChatMessage]) -> Conversation:
    """inspect messages as a core conversation (each message kept as its turn's ``raw``)."""
    turns = []
    for message in messages:
        role = _ROLES.get(type(message), "user")
        if isinstance(message.content, str):
            turn = Turn(role, (TextPart(message.content),), raw=message, text_only=True)
        else:
            turn = Turn(role, tuple(_part(content) for content in message.content), raw=message)
        turns.append(turn)
    return Conversation(tuple(turns))


def _content(part: Part) -> Content:
    if isinstance(part, TextPart):
        if isinstance(part.raw, ContentText):
            return (
                part.raw
                if part.raw.text == part.text
                else part.raw.model_copy(update={"text": part.text})
            )
        return ContentText(text=part.text)
    return part.raw


def from_conversation(conversation: Conversation) -> list[ChatMessage]:
    """The conversation back as inspect messages; untouched messages are the same objects."""
    messages: list[ChatMessage] = []
    for turn in conversation:
        original: ChatMessage = turn.raw
        if turn.text_only and len(turn.parts) == 1 and isinstance(turn.parts[0], TextPart):
            content: str | list[Content] = turn.parts[0].text
        else:
            content = [_content(part) for part in turn.parts]
        if content == original.content:
            messages.append(original)
        else:
            messages.append(original.model_copy(update={"content": content}))
    return messages


__all__ = ["backend_messages", "from_conversation", "to_conversation"]


def backend_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """A sample's messages as a backend's chat (images loaded), for the target providers.

    Tool results have no place in a plain VLM chat template: they are sent as user
    text.  Parts other than text and images are left out: the defences refuse them
    before a guarded target is called.
    """
    converted = []
    for message in messages:
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        parts = (
            [ContentText(text=message.content)]
            if isinstance(message.content, str)
            else message.content
        )
        content: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, ContentImage):
                content.append({"type": "image", "image": load_image(part.image)})
            elif isinstance(part, ContentText):
                content.append({"type": "text", "text": part.text})
        converted.append({"role": role, "content": content})
    return converted
