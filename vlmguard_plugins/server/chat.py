"""The chat completion request: the part of its schema the gateway checks before guarding.

Only the envelope is validated here (``model``, ``messages`` as a list of message
objects with a known role, ``stream``).  Message content is left to the core
conversation model: a content list may hold any part, and the core decides what it
reads, what it refuses and what passes unread.  A schema that refused unknown parts
here would be a second, diverging coverage rule; one that dropped them would forward
content unseen.  Every field is kept and forwarded as the client sent it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    """One message of the conversation: a known role, and content of any parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[Any] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of ``POST /v1/chat/completions`` the gateway depends on."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


__all__ = ["ChatCompletionRequest", "ChatMessage"]
