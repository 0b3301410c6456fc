"""Translate what a LangChain chat model accepts into a rewrite request, and the result back.

Every input kind a chat model accepts (a string, a list of messages, a prompt value)
plus a dict of prompt variables becomes a :class:`~vlmguard_plugins.RewriteRequest`
and a ``rebuild`` function that writes the rewritten text back into an object of the
same kind.  Image blocks are read, never modified: the rebuilt message holds the very
same block objects, in the same order.

Images found in framework input are requested with ``allow_local_files=False``: a
path or ``file://`` URL inside user-controlled content never makes the guard read a
local file, and http(s) URLs follow the rewriter's URL policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from pydantic import ValidationError

from vlmguard_plugins import HistoryTurn, RewriteRequest, RewriteResult
from vlmguard_plugins.errors import ImageInputError, InputError
from vlmguard_plugins.types import MAX_HISTORY_TURNS

METADATA_KEY = "vlmguard"
"""Key of the rewrite's outcome in the rewritten message's ``response_metadata``."""

_RAW_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass
class GuardedInput:
    """A framework input taken apart: what to rewrite, and how to put the answer back.

    ``image_error`` is set when the input holds an image the guard cannot look at
    (a provider file id, for example); the caller applies the failure policy to it.
    """

    request: RewriteRequest
    rebuild: Callable[[RewriteResult], Any]
    image_error: ImageInputError | None = None


def result_summary(result: RewriteResult) -> dict[str, Any]:
    """The result as plain JSON data (without the raw model output), for metadata and events."""
    return result.model_dump(mode="json", exclude={"raw"})


def get_rewrite_result(message: BaseMessage) -> RewriteResult | None:
    """The :class:`~vlmguard_plugins.RewriteResult` stored on a message the guard rewrote.

    Returns ``None`` for a message the guard did not produce.
    """
    data = message.response_metadata.get(METADATA_KEY)
    return RewriteResult.model_validate(data) if isinstance(data, Mapping) else None


def guard_input(value: Any, *, input_key: str, image_key: str | None) -> GuardedInput:
    """Take apart any input the guard accepts.

    Raises:
        InputError: the input is of a kind the guard does not accept, has no human
            message, or (for a dict) lacks ``input_key``.
    """
    if isinstance(value, str):
        return GuardedInput(_request(value), rebuild=lambda result: result.prompt)
    if isinstance(value, StringPromptValue):
        return GuardedInput(
            _request(value.text), rebuild=lambda result: StringPromptValue(text=result.prompt)
        )
    if isinstance(value, PromptValue):
        inner = _guard_messages(value.to_messages())
        return GuardedInput(
            inner.request,
            rebuild=lambda result: ChatPromptValue(messages=inner.rebuild(result)),
            image_error=inner.image_error,
        )
    if isinstance(value, Mapping):
        return _guard_mapping(value, input_key=input_key, image_key=image_key)
    if isinstance(value, Sequence):
        return _guard_messages(_as_messages(value))
    raise InputError(
        f"cannot guard an input of type {type(value).__name__}; pass a string, a list of "
        "messages, a prompt value or a dict of prompt variables"
    )


# --- messages -------------------------------------------------------------------------


def _as_messages(value: Sequence[Any]) -> list[BaseMessage]:
    try:
        return convert_to_messages(value)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InputError(f"the input is not a list of chat messages: {exc}") from exc


def _guard_messages(messages: list[BaseMessage]) -> GuardedInput:
    index = next((i for i in reversed(range(len(messages))) if messages[i].type == "human"), None)
    if index is None:
        raise InputError("the messages hold no human message, so there is nothing to rewrite")
    target = messages[index]
    text, images, image_error = read_content(target.content)
    history = [
        HistoryTurn(role="user" if message.type == "human" else "assistant", text=str(message.text))
        for message in messages[:index]
        if message.type in ("human", "ai") and message.text.strip()
    ][-MAX_HISTORY_TURNS:]

    def rebuild(result: RewriteResult) -> list[BaseMessage]:
        metadata = {**target.response_metadata, METADATA_KEY: result_summary(result)}
        guarded = target.model_copy(
            update={
                "content": write_content(target.content, result.prompt),
                "response_metadata": metadata,
            }
        )
        return [*messages[:index], guarded, *messages[index + 1 :]]

    return GuardedInput(_request(text, images, history), rebuild, image_error)


def read_content(content: str | list[Any]) -> tuple[str, list[str], ImageInputError | None]:
    """The text of a message's content, its image sources, and any unreadable image.

    Text blocks are joined with newlines.  Images come from OpenAI ``image_url``
    blocks, LangChain standard ``image`` blocks (v1 ``base64``/``url`` and the older
    v0 ``source_type`` form) and Anthropic-style ``source`` blocks.
    """
    if isinstance(content, str):
        return content, [], None
    texts: list[str] = []
    images: list[str] = []
    unreadable: list[str] = []
    for block in content:
        if isinstance(block, str):
            texts.append(block)
        elif block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") in ("image_url", "image"):
            source = image_source(block)
            if source is None:
                unreadable.append(_describe(block))
            else:
                images.append(source)
    error = None
    if unreadable:
        error = ImageInputError(
            f"the guard cannot read image block(s) {', '.join(unreadable)}: pass the image as "
            "base64 data or a URL so it can be checked"
        )
    return "\n".join(text for text in texts if text), images, error


def write_content(content: str | list[Any], prompt: str) -> str | list[Any]:
    """``content`` with its text replaced by ``prompt``, every other block kept in place.

    The rewritten text takes the place of the first text block; further text blocks
    (already part of the rewritten text) are dropped.  Non-text blocks are the same
    objects as before.
    """
    if isinstance(content, str):
        return prompt
    rewritten: list[Any] = []
    placed = False
    for block in content:
        is_text = isinstance(block, str) or block.get("type") == "text"
        if not is_text:
            rewritten.append(block)
        elif not placed:
            rewritten.append(prompt if isinstance(block, str) else {**block, "text": prompt})
            placed = True
    if not placed and prompt:
        rewritten.insert(0, {"type": "text", "text": prompt})
    return rewritten


def image_source(block: Mapping[str, Any]) -> str | None:
    """A data: or http(s) URL for an image block, or ``None`` when it has neither."""
    if block.get("type") == "image_url":
        inner = block.get("image_url")
        url = inner.get("url") if isinstance(inner, Mapping) else inner
        return url if isinstance(url, str) and url else None
    if "source_type" in block:  # LangChain v0 multimodal block
        if block["source_type"] == "base64" and isinstance(block.get("data"), str):
            return _data_url(block["data"], block.get("mime_type"))
        if block["source_type"] == "url" and isinstance(block.get("url"), str):
            return block["url"]
        return None
    if isinstance(block.get("base64"), str):
        return _data_url(block["base64"], block.get("mime_type"))
    if isinstance(block.get("url"), str):
        return block["url"]
    source = block.get("source")
    if isinstance(source, Mapping):  # Anthropic's format, also accepted by LangChain
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return _data_url(source["data"], source.get("media_type"))
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return source["url"]
    return None


def _data_url(payload: str, mime_type: Any) -> str:
    mime = mime_type if isinstance(mime_type, str) and mime_type else "application/octet-stream"
    return f"data:{mime};base64,{payload}"


def _describe(block: Mapping[str, Any]) -> str:
    for key in ("file_id", "id"):
        if isinstance(block.get(key), str):
            return f"{block.get('type')} with {key} {block[key]!r}"
    return f"{block.get('type')} without base64 data or a URL"


# --- dicts of prompt variables ----------------------------------------------------------


def _guard_mapping(
    value: Mapping[str, Any], *, input_key: str, image_key: str | None
) -> GuardedInput:
    if input_key not in value:
        raise InputError(
            f"the input dict has no {input_key!r} key (keys: {', '.join(map(str, value))}); "
            "set input_key to the variable that holds the user's text"
        )
    field = value[input_key]
    if isinstance(field, str):
        images, image_error = _mapping_images(value.get(image_key) if image_key else None)
        return GuardedInput(
            _request(field, images),
            rebuild=lambda result: {**value, input_key: result.prompt},
            image_error=image_error,
        )
    if isinstance(field, Sequence):
        inner = _guard_messages(_as_messages(field))
        return GuardedInput(
            inner.request,
            rebuild=lambda result: {**value, input_key: inner.rebuild(result)},
            image_error=inner.image_error,
        )
    raise InputError(
        f"the input dict's {input_key!r} value is a {type(field).__name__}; "
        "expected the user's text or a list of messages"
    )


def _mapping_images(raw: Any) -> tuple[list[Any], ImageInputError | None]:
    """Image sources from a prompt variable: one or a list of sources or image blocks.

    A string that is neither a data: nor a URL but is valid base64 is taken as the
    image's base64 data, the form ``data:image/jpeg;base64,{image}`` templates expect.
    """
    if raw is None:
        return [], None
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    images: list[Any] = []
    unreadable: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            source = image_source(item)
            if source is None:
                unreadable.append(_describe(item))
            else:
                images.append(source)
        elif isinstance(item, str) and _is_raw_base64(item):
            images.append(_data_url(item.strip(), None))
        else:
            images.append(item)
    error = None
    if unreadable:
        error = ImageInputError(f"the guard cannot read image(s) {', '.join(unreadable)}")
    return images, error


def _is_raw_base64(text: str) -> bool:
    text = text.strip()
    if text[:16].lower().startswith("data:") or "://" in text[:16]:
        return False
    return len(text) >= 16 and len(text) % 4 == 0 and _RAW_BASE64.fullmatch(text) is not None


def _request(
    text: str, images: list[Any] | None = None, history: list[HistoryTurn] | None = None
) -> RewriteRequest:
    try:
        return RewriteRequest(
            text=text, images=images or [], history=history or [], allow_local_files=False
        )
    except ValidationError as exc:
        raise InputError(f"invalid rewrite request: {exc.errors()[0]['msg']}") from exc
