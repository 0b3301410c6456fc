"""The chat completion request: its schema, and where the guard reads and writes it.

The gateway validates the body against the part of the OpenAI schema it relies on
(unknown fields are kept and forwarded as they are), reads the text, images and
history of the last user message, and writes the rewritten text back in place of
that message's text parts.  Image parts are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..types import MAX_HISTORY_TURNS, HistoryTurn


class ImageURL(BaseModel):
    """The ``image_url`` object of an image part."""

    model_config = ConfigDict(extra="allow")

    url: str = Field(min_length=1)
    detail: str | None = None


class ContentPart(BaseModel):
    """One part of a message's content: text, an image, or another kind (kept as is)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs a 'text' string")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs an 'image_url' object with a 'url'")
        return self


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` the gateway depends on."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


@dataclass
class UserTurn:
    """What the guard checks: the last user message, with the conversation before it."""

    index: int
    text: str
    image_urls: list[str] = field(default_factory=list)
    history: list[HistoryTurn] = field(default_factory=list)


def _text_of(content: str | list[ContentPart] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content if part.type == "text" and part.text)


def last_user_turn(request: ChatCompletionRequest) -> UserTurn | None:
    """The last user message's text and image URLs, and the text of the turns before it."""
    for index in range(len(request.messages) - 1, -1, -1):
        message = request.messages[index]
        if message.role != "user":
            continue
        images = (
            [part.image_url.url for part in message.content if part.image_url is not None]
            if isinstance(message.content, list)
            else []
        )
        history = [
            HistoryTurn(role=earlier.role, text=text)
            for earlier in request.messages[:index]
            if earlier.role in ("user", "assistant") and (text := _text_of(earlier.content))
        ]
        return UserTurn(
            index=index,
            text=_text_of(message.content),
            image_urls=images,
            history=history[-MAX_HISTORY_TURNS:],
        )
    return None


def replace_user_text(body: dict[str, Any], index: int, text: str) -> None:
    """Put ``text`` in place of the text of ``body['messages'][index]``, keeping its images.

    A string content becomes ``text``.  In a list content, the first text part takes
    ``text`` and the other text parts are dropped (they were rewritten together);
    every other part keeps its place.  A list without text gets a text part at the end.
    """
    message = body["messages"][index]
    content = message.get("content")
    if not isinstance(content, list):
        message["content"] = text
        return
    rewritten: list[Any] = []
    placed = False
    for part in content:
        if part.get("type") != "text":
            rewritten.append(part)
        elif not placed:
            rewritten.append({**part, "text": text})
            placed = True
    if not placed:
        rewritten.append({"type": "text", "text": text})
    message["content"] = rewritten
