"""NeMo's conversation as the core :class:`~vlmguard_plugins.conversation.Conversation`.

The rails read no content themselves: NeMo's message dicts use the OpenAI content
shapes, so each one goes through the core's
:func:`~vlmguard_plugins.conversation.openai_format.turn_from_openai`, and the core
decides what is text, what is an image and what it cannot check.

The earlier turns come from NeMo's event stream, which is where a rail finds them:

- ``UtteranceUserActionFinished``: a user message as the user sent it
  (``final_transcript``: a string, or a list of content parts with images);
- ``StartUtteranceBotAction``: a bot message (``script``);
- ``BotToolCalls``: an assistant message that called tools (``tool_calls``);
- ``SystemMessage``: a system or developer message (``content``), which NeMo's
  passthrough mode forwards to the main model too, images included;
- ``UserToolMessages``: the tool messages of a request that ended in tool results
  (``tool_messages``), as NeMo records them for its tool input rails.

NeMo puts no event in the stream for a tool message that is not the request's last
message; it gathers every tool message of the request into ``UserToolMessages``
instead.  Each tool message therefore becomes a ``tool`` turn right after the
``BotToolCalls`` turn that asked for it (matched by ``tool_call_id``), so the rewriter
reads the conversation in the order the main model will.

For the input rail the current message is ``$user_message`` rather than the last user
event, because an input rail that ran before this one may have changed it.  For the
tool input rail the tool messages are ``$tool_messages``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vlmguard_plugins.conversation import Conversation, Role, TextPart, Turn
from vlmguard_plugins.conversation.openai_format import turn_from_openai

_EVENT_TURNS: dict[str, tuple[Role, str]] = {
    # event type -> (the role it speaks with, the field that holds its content)
    "UtteranceUserActionFinished": ("user", "final_transcript"),
    "StartUtteranceBotAction": ("assistant", "script"),
    "SystemMessage": ("system", "content"),
}


def _dict_events(events: Iterable[Any] | None) -> list[dict[str, Any]]:
    # Colang 2.x mixes its own event objects into the stream; only dicts are messages.
    # NeMo's events are plain dicts; an exact type check is cheaper than a Mapping one.
    return [event for event in events or () if type(event) is dict]


def _call_ids(tool_calls: Any) -> set[str]:
    """The ids of an assistant message's tool calls (OpenAI and LangChain shapes alike)."""
    if not isinstance(tool_calls, Sequence) or isinstance(tool_calls, str):
        return set()
    return {str(call["id"]) for call in tool_calls if isinstance(call, Mapping) and call.get("id")}


def tool_turn(tool_message: Mapping[str, Any]) -> Turn:
    """One of NeMo's tool messages (``content``, ``name``, ``tool_call_id``) as a tool turn."""
    return turn_from_openai({**tool_message, "role": "tool"})


def history_turns(
    events: Iterable[Any] | None, tool_messages: Sequence[Any] | None = None
) -> list[Turn]:
    """The turns of NeMo's event stream, in order, with the tool messages placed.

    ``tool_messages`` are the request's tool messages (``$tool_messages``); without
    them, the latest ``UserToolMessages`` event of the stream gives them (NeMo's event
    cache keeps one from an earlier request that ended in tool results).  Each goes
    right after the ``BotToolCalls`` turn with its ``tool_call_id``; one that no call
    in the stream asked for goes at the end.
    """
    stream = _dict_events(events)
    if tool_messages is None:
        recorded = [e for e in stream if e.get("type") == "UserToolMessages"]
        tool_messages = (recorded[-1].get("tool_messages") or []) if recorded else []
    # A tool message that is not a mapping still becomes a turn, with content the
    # core refuses, rather than being skipped: NeMo forwards it all the same.
    tools = [
        (str(m.get("tool_call_id") or ""), tool_turn(m))
        if isinstance(m, Mapping)
        else ("", turn_from_openai({"role": "tool", "content": m}))
        for m in tool_messages
    ]
    placed = [False] * len(tools)
    turns: list[Turn] = []
    for event in stream:
        kind = event.get("type")
        if kind == "BotToolCalls":
            calls = event.get("tool_calls")
            turns.append(
                turn_from_openai({"role": "assistant", "content": None, "tool_calls": calls})
            )
            ids = _call_ids(calls)
            for index, (call_id, turn) in enumerate(tools):
                if not placed[index] and call_id and call_id in ids:
                    turns.append(turn)
                    placed[index] = True
            continue
        spec = _EVENT_TURNS.get(kind) if isinstance(kind, str) else None
        if spec is not None:
            turns.append(turn_from_openai({"role": spec[0], "content": event.get(spec[1])}))
    turns.extend(turn for index, (_, turn) in enumerate(tools) if not placed[index])
    return turns


def unseen_tool_results(events: Iterable[Any] | None) -> list[str]:
    """The ids of the tool calls in ``events`` whose results the stream does not hold.

    NeMo forwards every tool message of a request to the main model in passthrough
    mode, but records the tool messages in the stream only when the request ends in
    them (``UserToolMessages``).  A call without its result here means the request
    carries a tool message that no rail can read.
    """
    stream = _dict_events(events)
    called: list[str] = []
    for event in stream:
        if event.get("type") == "BotToolCalls":
            called.extend(sorted(_call_ids(event.get("tool_calls"))))
    recorded = [e for e in stream if e.get("type") == "UserToolMessages"]
    answered = {
        str(m.get("tool_call_id"))
        for m in ((recorded[-1].get("tool_messages") or []) if recorded else [])
        if isinstance(m, Mapping) and m.get("tool_call_id")
    }
    return [call_id for call_id in called if call_id not in answered]


def user_turn(user_message: Any) -> Turn:
    """``$user_message`` (a string, or a list of OpenAI-style content parts) as a user turn."""
    return turn_from_openai({"role": "user", "content": user_message})


def _without_text(turns: Sequence[Turn]) -> list[Turn]:
    """The turns with every part but their text: their images still reach the rewriter."""
    return [
        turn.with_parts([part for part in turn.parts if not isinstance(part, TextPart)])
        for turn in turns
    ]


def conversation_from_events(
    events: Iterable[Any] | None, user_message: Any, *, use_history: bool = True
) -> Conversation:
    """The conversation the input rail guards: the earlier turns, then ``user_message``.

    With ``use_history=False`` the earlier turns keep every part but their text: their
    images (and any part the guard cannot check) still reach the rewriter's coverage
    check, because NeMo's passthrough mode forwards them to the main model.
    """
    earlier = history_turns(events)
    # The last user utterance is the message being guarded; $user_message stands for it.
    for index in range(len(earlier) - 1, -1, -1):
        if earlier[index].role == "user":
            del earlier[index]
            break
    if not use_history:
        earlier = _without_text(earlier)
    return Conversation((*earlier, user_turn(user_message)))


def conversation_from_tool_messages(
    events: Iterable[Any] | None, tool_messages: Sequence[Any], *, use_history: bool = True
) -> Conversation:
    """The conversation the tool input rail guards: NeMo's events with ``$tool_messages``.

    It ends with the tool results, and its last user turn is the request they answer:
    that turn is the one the rewrite replaces.  With ``use_history=False`` the turns
    before that request keep every part but their text; the request and the tool
    results after it are the current exchange and are read in full.
    """
    turns = history_turns(events, tool_messages)
    if not use_history:
        current = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=0)
        turns = [*_without_text(turns[:current]), *turns[current:]]
    return Conversation(tuple(turns))


__all__ = [
    "conversation_from_events",
    "conversation_from_tool_messages",
    "history_turns",
    "tool_turn",
    "unseen_tool_results",
    "user_turn",
]
