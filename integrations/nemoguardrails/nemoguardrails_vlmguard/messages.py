"""NeMo's ``$user_message`` in and out: a string, or a list of OpenAI-style content parts.

A multimodal user message reaches the rails as the list of parts the caller sent::

    [{"type": "text", "text": "How do I use this?"},
     {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]

The rewriter reads the text parts and the images; the rewrite goes back in place of
the text, and every other part (images first of all) is returned as it came.
"""

from __future__ import annotations

from typing import Any

from vlmguard_plugins.errors import InputError
from vlmguard_plugins.types import HistoryTurn

UserMessage = str | list[dict[str, Any]]

TEXT_PART_TYPES = frozenset({"text", "input_text"})
IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})


def message_text(message: Any) -> str:
    """The text of a user message: the string itself, or its text parts joined by newlines."""
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    if isinstance(message, list):
        return "\n".join(
            part["text"]
            for part in message
            if isinstance(part, dict)
            and part.get("type") in TEXT_PART_TYPES
            and isinstance(part.get("text"), str)
        )
    raise InputError(
        "the user message must be a string or a list of content parts, "
        f"not {type(message).__name__}"
    )


def message_images(message: Any) -> list[Any]:
    """The image sources of a user message, in order (URL strings as sent; never fetched here).

    A part the rewriter cannot see (audio, a file, anything but text and images) is an
    :class:`InputError`: content that was never checked must not pass as if it had been.
    """
    if not isinstance(message, list):
        return []
    images = []
    for part in message:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PART_TYPES:
            continue
        if kind not in IMAGE_PART_TYPES:
            raise InputError(
                f"the message has a content part the rewriter cannot check (type {kind!r}); "
                "only text and image parts are supported"
            )
        source = part.get("image_url")
        if isinstance(source, dict):
            source = source.get("url")
        # A malformed part is passed on as it is: the core refuses it with an ImageInputError
        # and the failure policy decides, so it can never slip past the guard unseen.
        images.append(source)
    return images


def with_text(message: Any, text: str) -> UserMessage:
    """``message`` with its text replaced by ``text`` and every other part kept unchanged.

    The new text takes the place of the first text part (or leads the message when it
    had none); further text parts are dropped, since the rewrite covers all of them.
    """
    if not isinstance(message, list):
        return text
    rewritten: list[dict[str, Any]] = []
    placed = False
    for part in message:
        if isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES:
            if not placed:
                rewritten.append({**part, "text": text})
                placed = True
            continue
        rewritten.append(part)
    if not placed:
        rewritten.insert(0, {"type": "text", "text": text})
    return rewritten


def history_from_events(events: list[dict[str, Any]] | None, max_turns: int) -> list[HistoryTurn]:
    """Earlier turns of the conversation from NeMo's event stream (the current message excluded).

    User turns come from ``UtteranceUserActionFinished`` (what the user actually sent, before
    any rail changed it) and assistant turns from ``StartUtteranceBotAction``; Colang 2.x
    mixes these dictionaries with its own internal event objects, which are skipped.
    """
    turns: list[HistoryTurn] = []
    for event in events or []:
        if not isinstance(event, dict):
            continue
        kind = event.get("type")
        if kind == "UtteranceUserActionFinished":
            turns.append(HistoryTurn(role="user", text=message_text(event.get("final_transcript"))))
        elif kind == "StartUtteranceBotAction" and isinstance(event.get("script"), str):
            turns.append(HistoryTurn(role="assistant", text=event["script"]))
    # The last user utterance is the message being rewritten, not history.
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role == "user":
            del turns[index]
            break
    return turns[-max_turns:] if max_turns > 0 else []
