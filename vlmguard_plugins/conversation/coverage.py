"""Coverage, request building and write-back: the guard's first promise, in one place.

*Nothing reaches the VLM that the rewriter has not seen.*  For a conversation that
means:

- every text part of the last user turn is what the rewriter rewrites, and the text
  of every other user, assistant and tool turn is its history;
- every image of every turn (system, user, assistant and tool turns alike, not only
  the last) is given to the rewriter, earlier turns' images first, within the image
  limits: a conversation over them is refused, never trimmed;
- a part the guard cannot read (audio, video, a file, an unknown type, an image it
  cannot load) is refused with :class:`~vlmguard_plugins.errors.UnsupportedContentError`
  or :class:`~vlmguard_plugins.errors.ImageInputError`; the ``unsupported_content="drop"``
  setting removes unsupported parts from what is forwarded instead.

Write-back has one behaviour for every entry point: the rewritten text takes the place
of the user turn's first text part, its other text parts are removed (the rewrite
covers them), and every other part keeps its position.  A turn with no text gets the
rewrite as a new text part after its last part (an image-only message reads "image,
then question").  When the rewriter changed nothing, the conversation is returned as
it came.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import ImageInputError, InputError, TextTooLongError, UnsupportedContentError
from ..types import (
    MAX_HISTORY_TURNS,
    HistoryOverflow,
    HistoryTurn,
    RewriteRequest,
    RewriteResult,
)
from .model import Conversation, ImagePart, OtherPart, Part, TextPart, Turn

UnsupportedContentPolicy = Literal["refuse", "drop"]
"""What to do with a part the guard cannot read: refuse the request (default) or drop the part."""

ASSISTANT_STRUCTURE_KINDS = frozenset(
    {
        "tool_call",
        "tool_call_chunk",
        "tool_use",
        "function_call",
        "server_tool_call",
        "server_tool_call_chunk",
        "server_tool_result",
        "invalid_tool_call",
        "reasoning",
        "thinking",
        "redacted_thinking",
        "refusal",
        "ToolCallBlock",
        "ThinkingBlock",
    }
)
"""Parts of an assistant turn that are the model's own bookkeeping (tool calls it made,
its reasoning, a refusal): they are forwarded, and since chat templates render them as
text, whatever text they carry is read as history (see :func:`structure_text`)."""

_STRUCTURE_TEXT_FIELDS = ("text", "refusal", "thinking", "reasoning", "summary", "content")
_STRUCTURE_ARGUMENT_FIELDS = ("args", "arguments", "input", "tool_kwargs")


def structure_text(part: OtherPart) -> str:
    """The text an assistant bookkeeping part carries (reasoning, a refusal, tool arguments).

    Read from the part's own object, a dict or a framework block, by the field names
    the formats use; a client can write any of them, and a template renders them.
    """
    raw = part.raw
    values: list[str] = []
    for name in (*_STRUCTURE_TEXT_FIELDS, *_STRUCTURE_ARGUMENT_FIELDS):
        value = raw.get(name) if isinstance(raw, Mapping) else getattr(raw, name, None)
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, (Mapping, list)) and name in _STRUCTURE_ARGUMENT_FIELDS:
            values.append(json.dumps(value, ensure_ascii=False, default=str))
        elif isinstance(value, list):  # summaries and content as lists of text items
            values.extend(_texts_of(value))
    return "\n".join(value for value in values if value)


_MESSAGE_FIELDS = ("tool_calls", "function_call", "reasoning_content", "refusal")


def message_fields_text(message: Any) -> str:
    """Text an assistant message carries outside its content (tool calls, reasoning).

    Chat templates render these fields; a client that writes the conversation can put
    anything in them, so the rewriter reads them as history.
    """
    values: list[str] = []
    extra = message.get("additional_kwargs") if isinstance(message, Mapping) else None
    extra = extra if extra is not None else getattr(message, "additional_kwargs", None)
    # Frameworks keep these fields on the message or in its additional_kwargs.
    for holder in (message, extra if isinstance(extra, Mapping) else None):
        if holder is None:
            continue
        for name in _MESSAGE_FIELDS:
            value = _field(holder, name)
            if isinstance(value, str) and value:
                values.append(value)
            elif value:
                values.append(json.dumps(value, ensure_ascii=False, default=str))
    return "\n".join(values)


def _field(holder: Any, name: str) -> Any:
    return holder.get(name) if isinstance(holder, Mapping) else getattr(holder, name, None)


def _texts_of(items: list[Any]) -> list[str]:
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("text"), str):
            texts.append(item["text"])
        elif isinstance(getattr(item, "text", None), str):
            texts.append(item.text)
    return texts


@dataclass(frozen=True)
class GuardPlan:
    """A conversation ready for the rewriter.

    ``conversation`` is the one to forward (unsupported parts dropped when the setting
    says so); ``target`` is the index of the user turn to rewrite, ``request`` what the
    rewriter reads.  ``target`` and ``request`` are ``None`` when the conversation has
    no user turn, no image and no assistant or tool text: only the application's own
    system text, nothing to rewrite and nothing unseen.
    """

    conversation: Conversation
    target: int | None
    request: RewriteRequest | None
    dropped: tuple[str, ...] = ()


def check_coverage(
    conversation: Conversation, *, unsupported_content: UnsupportedContentPolicy = "refuse"
) -> tuple[Conversation, tuple[str, ...]]:
    """Refuse (or drop) every part the guard cannot read; return what may be forwarded.

    Raises:
        UnsupportedContentError: a part the guard does not read, under ``refuse``.
        ImageInputError: an image part the guard cannot load (no data, no URL).
    """
    dropped: list[str] = []
    turns: list[Turn] = []
    for position, turn in enumerate(conversation):
        kept: list[Part] = []
        for part_index, part in enumerate(turn.parts):
            if isinstance(part, ImagePart) and part.problem is not None:
                raise ImageInputError(
                    f"the guard cannot read an image in message {position} ({turn.role}): "
                    f"{part.problem}; send the image as base64 data or a URL"
                )
            if isinstance(part, OtherPart) and not _passes_unread(turn, part):
                if unsupported_content == "drop":
                    dropped.append(part.kind)
                    continue
                raise UnsupportedContentError(
                    f"message {position} ({turn.role}) holds a {part.kind!r} part, which the "
                    "guard cannot check; only text and images are guarded. Remove it, or set "
                    "unsupported_content='drop' to drop such parts before the model sees them",
                    part_type=part.kind,
                    role=turn.role,
                    message_index=position,
                    part_index=part_index,
                )
            kept.append(part)
        turns.append(turn if len(kept) == len(turn.parts) else turn.with_parts(kept))
    return Conversation(tuple(turns)), tuple(dropped)


CONTENT_FREE_KINDS = frozenset({"CachePoint", "cache_point"})
"""Markers that carry no content (prompt-caching breakpoints): nothing in them to check."""


def _passes_unread(turn: Turn, part: OtherPart) -> bool:
    if part.kind in CONTENT_FREE_KINDS:
        return True
    return turn.role == "assistant" and part.kind in ASSISTANT_STRUCTURE_KINDS


def _carries_text(turn: Turn) -> bool:
    return bool(turn.text.strip() or turn.others or message_fields_text(turn.raw))


def plan(
    conversation: Conversation,
    *,
    unsupported_content: UnsupportedContentPolicy = "refuse",
    allow_local_files: bool = False,
    max_history_turns: int = MAX_HISTORY_TURNS,
    max_text_chars: int | None = None,
    history_overflow: HistoryOverflow = "refuse",
) -> GuardPlan:
    """Check coverage and build the rewriter's request for ``conversation``.

    A conversation with more history than the rewriter reads (``max_history_turns``
    turns, ``max_text_chars`` characters with the request) is refused, unless
    ``history_overflow="trim"`` explicitly allows the oldest turns' text to pass unread
    (their images are still read).

    Raises:
        UnsupportedContentError, ImageInputError: see :func:`check_coverage`.
        TextTooLongError: more history than the rewriter reads, under ``refuse``.
        InputError: images but no user turn whose text the rewrite could replace.
    """
    covered, dropped = check_coverage(conversation, unsupported_content=unsupported_content)
    target = covered.last_user_index()
    has_images = any(turn.images for turn in covered)
    if target is None:
        if has_images:
            raise InputError(
                "the messages carry images but no user message, so the guard has no request "
                "to rewrite; add the user's message"
            )
        if any(turn.role in ("assistant", "tool") and _carries_text(turn) for turn in covered):
            # Assistant and tool text is read as the history of a user's request; with no
            # request there is nothing to read it with, and forwarding it would let tool
            # output (a route for injected instructions) reach the model unseen.
            raise InputError(
                "the messages carry assistant or tool text but no user message, so the guard "
                "has no request to check them with; add the user's message"
            )
        return GuardPlan(covered, None, None, dropped)
    history: list[HistoryTurn] = []
    history_images: list[object] = []
    for position, turn in enumerate(covered):
        if position == target:
            continue
        # System text is the application's own; tool output is data the model will read
        # (and a route for injected instructions), so the rewriter reads it as history.
        text = turn.text if turn.role != "system" else ""
        if turn.role == "assistant":
            carried = [structure_text(part) for part in turn.others]
            carried.append(message_fields_text(turn.raw))
            text = "\n".join(value for value in (text, *carried) if value)
        images = [part.source for part in turn.images]
        if not text.strip() and not images:
            continue
        history.append(HistoryTurn(role=turn.role, text=text, images=len(images)))
        history_images.extend(images)
    current = covered.turns[target]
    budget = None if max_text_chars is None else max_text_chars - len(current.text)
    if history_overflow == "trim":
        history = _trim(history, max_history_turns, budget)
    if len(history) > max_history_turns:
        raise TextTooLongError(
            f"the conversation has {len(history) + 1} turns with text or images; the guard "
            f"reads at most {max_history_turns + 1}, and a turn it cannot read must not reach "
            "the model: shorten the conversation, raise max_history_turns, or set "
            "history_overflow='trim' to let the oldest text pass unread"
        )
    try:
        request = RewriteRequest(
            text=current.text,
            images=[*history_images, *(part.source for part in current.images)],
            history=history,
            allow_local_files=allow_local_files,
        )
    except ValidationError as exc:
        raise InputError(f"invalid rewrite request: {exc.errors()[0]['msg']}") from exc
    return GuardPlan(covered, target, request, dropped)


def _trim(history: list[HistoryTurn], max_turns: int, max_chars: int | None) -> list[HistoryTurn]:
    """Drop the oldest turns' text until the history fits; turns with images stay (as markers)."""
    trimmed = list(history)

    def over() -> bool:
        chars = sum(len(turn.text) for turn in trimmed)
        return len(trimmed) > max_turns or (max_chars is not None and chars > max_chars)

    index = 0
    while over() and index < len(trimmed):
        turn = trimmed[index]
        if turn.images:
            if turn.text:
                trimmed[index] = turn.model_copy(update={"text": ""})
            index += 1
        else:
            del trimmed[index]
    return trimmed


def write_back(conversation: Conversation, index: int, prompt: str) -> Conversation:
    """``conversation`` with the text of turn ``index`` replaced by ``prompt``.

    The one write-back of the project (see the module's docstring for the placement).
    """
    turn = conversation.turns[index]
    parts: list[Part] = []
    placed = False
    for part in turn.parts:
        if not isinstance(part, TextPart):
            parts.append(part)
        elif not placed:
            parts.append(TextPart(prompt, raw=part.raw))
            placed = True
    if not placed:
        parts.append(TextPart(prompt))
    return conversation.replace_turn(index, turn.with_parts(parts))


def apply_result(plan: GuardPlan, result: RewriteResult) -> Conversation:
    """The conversation to forward once ``result`` answered ``plan``'s request."""
    if plan.target is None or plan.request is None:
        return plan.conversation
    if result.prompt == plan.request.text:
        return plan.conversation
    return write_back(plan.conversation, plan.target, result.prompt)


__all__ = [
    "ASSISTANT_STRUCTURE_KINDS",
    "CONTENT_FREE_KINDS",
    "GuardPlan",
    "UnsupportedContentPolicy",
    "apply_result",
    "check_coverage",
    "plan",
    "message_fields_text",
    "structure_text",
    "write_back",
]
