"""The core's conformance table through ``VLMGuardRewriter | ParrotFakeChatModel``.

Every case runs in two LangChain spellings, sync and async:

- ``openai``: the case's OpenAI messages through LangChain's own
  ``convert_to_messages``, which keeps OpenAI content blocks as they are;
- ``standard``: the same messages with LangChain's standard (v1) content blocks, as
  ``message.content_blocks`` translates them (``image_url`` -> ``image``,
  ``input_audio`` -> ``audio``, ``file`` -> ``file``), and the nearest standard block
  for the parts LangChain leaves as provider blocks (:data:`NEAREST_STANDARD`).

What the parrot (the VLM) received is read with the helpers below, not with the
adapter's converter, so the test does not check the converter with itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from langchain_vlmguard import VLMGuardRewriter

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conformance import (
    REWRITE,
    ConformanceCase,
    assert_case_seen,
    assert_nothing_unseen,
    conformance_cases,
    image_digest,
    rewriting_backend,
)

FORMS = ("openai", "standard")

NOT_EXPRESSIBLE: dict[tuple[str, str], str] = {}
"""(case, form) pairs LangChain cannot express, with the reason.  Every case of the
table runs in both forms today; a new case that cannot must be listed here."""

NON_STANDARD_KEPT = {
    "hologram": "an unknown provider type has no standard block: LangChain carries it "
    "wrapped as {'type': 'non_standard', 'value': ...}, which the guard reads as the "
    "block it wraps and refuses by its own type",
}
"""Provider blocks left as LangChain's ``non_standard`` wrapper in the standard form."""


def _nearest_standard(block: Any) -> Any:
    """A block of ``content_blocks`` as the nearest standard block, where LangChain has one."""
    if not isinstance(block, Mapping) or block.get("type") != "non_standard":
        return block
    value = block["value"]
    kind = value.get("type")
    if kind == "input_text":  # OpenAI Responses text
        return {"type": "text", "text": value["text"]}
    if kind == "input_image":  # OpenAI Responses image
        return {"type": "image", "url": value["image_url"]}
    if kind == "video_url":
        return {"type": "video", "url": value["video_url"]["url"]}
    assert kind in NON_STANDARD_KEPT, f"no nearest standard block chosen for {kind!r}"
    return block


def to_langchain(case: ConformanceCase, form: str) -> list[BaseMessage]:
    messages = convert_to_messages(case.messages)
    if form == "openai":
        return messages
    standard = []
    for message in messages:
        if isinstance(message.content, list):
            blocks = [_nearest_standard(block) for block in message.content_blocks]
            message = message.model_copy(update={"content": blocks})
        standard.append(message)
    return standard


# --- what the model received, read independently of the adapter ------------------------


def _blocks(message: BaseMessage) -> Iterator[Any]:
    if isinstance(message.content, str):
        yield message.content
        return
    for block in message.content:
        if isinstance(block, Mapping) and block.get("type") == "non_standard":
            yield block["value"]
        else:
            yield block


def _image_of(block: Mapping[str, Any]) -> str | None:
    kind = block.get("type")
    if kind == "image_url":
        inner = block["image_url"]
        return inner["url"] if isinstance(inner, Mapping) else inner
    if kind == "input_image":
        return block["image_url"]
    if kind == "image":
        if "base64" in block:
            return f"data:{block.get('mime_type', 'image/png')};base64,{block['base64']}"
        if block.get("source_type") == "base64":
            return f"data:{block.get('mime_type', 'image/png')};base64,{block['data']}"
        return block.get("url")
    return None


def received_texts_and_images(messages: list[BaseMessage]) -> tuple[list[str], list[str]]:
    texts: list[str] = []
    images: list[str] = []
    for message in messages:
        for block in _blocks(message):
            if isinstance(block, str):
                texts.append(block)
            elif block.get("type") in ("text", "input_text"):
                texts.append(block["text"])
            elif (image := _image_of(block)) is not None:
                images.append(image)
    return texts, images


def case_images(case: ConformanceCase) -> list[str]:
    return received_texts_and_images(convert_to_messages(case.messages))[1]


# --- the table -----------------------------------------------------------------------


def test_every_case_is_run_or_listed_with_a_reason() -> None:
    names = {case.name for case in conformance_cases()}
    assert {name for name, _ in NOT_EXPRESSIBLE} <= names
    assert all(reason for reason in NOT_EXPRESSIBLE.values())
    # The one provider block without a standard LangChain block is still expressed.
    unknown = next(case for case in conformance_cases() if case.name == "unknown_part_type")
    (human,) = to_langchain(unknown, "standard")
    assert [block["type"] for block in human.content_blocks] == ["text", "non_standard"]
    assert isinstance(human.content[1], dict) and human.content[1]["type"] == "non_standard"


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", conformance_cases(), ids=lambda case: case.name)
async def test_langchain_conformance(
    case: ConformanceCase, form: str, use_async: bool, recorder: Any
) -> None:
    if (case.name, form) in NOT_EXPRESSIBLE:
        pytest.skip(NOT_EXPRESSIBLE[case.name, form])
    backend = rewriting_backend()
    chain = VLMGuardRewriter(rewriter=Rewriter(backend)) | ParrotFakeChatModel()
    messages = to_langchain(case, form)
    config: RunnableConfig = {"callbacks": [recorder]}

    if case.expect == "refused":
        assert case.error is not None
        with pytest.raises(case.error):
            if use_async:
                await chain.ainvoke(messages, config)
            else:
                chain.invoke(messages, config)
        assert recorder.received == []  # the VLM was never called
        assert backend.calls == []
        return

    answer = await chain.ainvoke(messages, config) if use_async else chain.invoke(messages, config)

    (received,) = recorder.received
    texts, images = received_texts_and_images(received)
    # The user's last message reached the VLM rewritten; when it is also the last
    # message, the parrot answers with it.
    last_human = [message for message in received if message.type == "human"][-1:]
    assert any(REWRITE in text for text in received_texts_and_images(last_human)[0])
    if received[-1].type == "human":
        assert any(REWRITE in text for text in received_texts_and_images([answer])[0])
    assert_case_seen(case, backend.calls)
    system_texts = received_texts_and_images(
        [message for message in received if message.type == "system"]
    )[0]
    assert_nothing_unseen(case, backend.calls, texts, images, allowed_texts=system_texts)
    # Every image of the input reaches the VLM, in order.
    assert [image_digest(image) for image in images] == [
        image_digest(image) for image in case_images(case)
    ]
    assert [message.type for message in received] == [message.type for message in messages]
