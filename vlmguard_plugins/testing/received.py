"""What the test server received: one record per HTTP request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReceivedRequest"]


@dataclass
class ReceivedRequest:
    """One HTTP request a test server received, recorded before any fault was applied.

    ``headers`` have lower-case names; ``body`` is the parsed JSON object (``None``
    for a request without one, or whose body is not a JSON object).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    received_at: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat-completion request (empty for other requests)."""
        return list((self.body or {}).get("messages") or [])

    @property
    def image_urls(self) -> list[str]:
        """Every ``image_url`` of every message, in order."""
        return [
            part["image_url"]["url"]
            for message in self.messages
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if isinstance(part, dict) and part.get("type") == "image_url"
        ]

    @property
    def last_user_content(self) -> Any:
        """The ``content`` of the last user message, exactly as it was sent.

        Raises ``LookupError`` when the request has no user message.
        """
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content")
        raise LookupError(f"{self.method} {self.path} has no user message")

    @property
    def text(self) -> str:
        """The text of the last user message (all its text parts, joined by newlines)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part.get("text", ""))
        for part in content or []
        if isinstance(part, dict) and part.get("type") == "text"
    )
