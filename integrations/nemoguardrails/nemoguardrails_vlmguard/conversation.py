"""NeMo's conversation as the core :class:`~vlmguard_plugins.conversation.Conversation`.

The rail reads no content itself: NeMo's message dicts use the OpenAI content shapes,
so each one goes through the core's
:func:`~vlmguard_plugins.conversation.openai_format.turn_from_openai`, and the core
decides what is text, what is an image and what it cannot check.

The earlier turns come from NeMo's event stream, which is where a rail finds them:

- ``UtteranceUserActionFinished``: a user message as the user sent it
  (``final_transcript``: a string, or a list of content parts with images);
- ``StartUtteranceBotAction``: a bot message (``script``);
- ``SystemMessage``: a system or developer message (``content``), which NeMo's
  passthrough mode forwards to the main model too, images included.

The current message is ``$user_message`` rather than the last user event, because an
input rail that ran before this one may have changed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vlmguard_plugins.conversation import Conversation, Role, TextPart, Turn
from vlmguard_plugins.conversation.openai_format import turn_from_openai

_EVENT_TURNS: dict[str, tuple[Role, str]] = {
    # event type -> (the role it speaks with, the field that holds its content)
    "UtteranceUserActionFinished": ("user", "final_transcript"),
    "StartUtteranceBotAction": ("assistant", "script"),
    "SystemMessage": ("system", "content"),
}


def message_events(events: Iterable[Any] | None) -> list[tuple[Role, Any]]:
    """The messages of NeMo's event stream, in order, as ``(role, content)`` pairs.

    Colang 2.x mixes its own event objects into the stream; only the dictionaries
    above are messages.
    """
    messages: list[tuple[Role, Any]] = []
    for event in events or ():
        # NeMo's events are plain dicts; an exact type check is cheaper than a Mapping one.
        if type(event) is not dict:
            continue
        kind = event.get("type")
        spec = _EVENT_TURNS.get(kind) if isinstance(kind, str) else None
        if spec is not None:
            messages.append((spec[0], event.get(spec[1])))
    return messages


def user_turn(user_message: Any) -> Turn:
    """``$user_message`` (a string, or a list of OpenAI-style content parts) as a user turn."""
    return turn_from_openai({"role": "user", "content": user_message})


def conversation_from_events(
    events: Iterable[Any] | None, user_message: Any, *, use_history: bool = True
) -> Conversation:
    """The conversation the rail guards: the earlier turns, then ``user_message``.

    With ``use_history=False`` the earlier turns keep every part but their text: their
    images (and any part the guard cannot check) still reach the rewriter's coverage
    check, because NeMo's passthrough mode forwards them to the main model.
    """
    messages = message_events(events)
    # The last user utterance is the message being guarded; $user_message stands for it.
    for index in range(len(messages) - 1, -1, -1):
        if messages[index][0] == "user":
            del messages[index]
            break
    earlier = [turn_from_openai({"role": role, "content": content}) for role, content in messages]
    if not use_history:
        earlier = [
            turn.with_parts([part for part in turn.parts if not isinstance(part, TextPart)])
            for turn in earlier
        ]
    return Conversation((*earlier, user_turn(user_message)))


__all__ = ["conversation_from_events", "message_events", "user_turn"]
