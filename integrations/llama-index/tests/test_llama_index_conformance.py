"""The shared conformance table through every LlamaIndex entry point of the guard.

Each case (OpenAI message form) is written as LlamaIndex ``ChatMessage`` blocks: text
-> ``TextBlock``, an image URL -> ``ImageBlock(url=...)``, ``input_audio`` ->
``AudioBlock``, ``file`` -> ``DocumentBlock``, ``video_url`` -> ``VideoBlock``, and the
table's unknown part type -> ``CitableBlock`` (a block LlamaIndex has that the guard
does not read).  Every case is expressible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    ChatMessage,
    CitableBlock,
    DocumentBlock,
    ImageBlock,
    TextBlock,
    VideoBlock,
)
from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
from llama_index.core.utils import resolve_binary
from llama_index_vlmguard import VLMGuardLLM, guard_messages

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
from vlmguard_plugins.testing import ScriptedBackend

ROLES = {
    "system": "system",
    "developer": "developer",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def block_of(part: Any) -> Any:
    """One OpenAI-form content part as the LlamaIndex block a user would send."""
    if isinstance(part, str):
        return TextBlock(text=part)
    kind = part["type"]
    if kind in ("text", "input_text"):
        return TextBlock(text=part["text"])
    if kind == "image_url":
        return _image(part["image_url"]["url"])
    if kind == "input_image":
        return _image(part["image_url"])
    if kind == "input_audio":
        return AudioBlock(audio=part["input_audio"]["data"].encode(), format="wav")
    if kind == "file":
        return DocumentBlock(data=part["file"]["file_data"].encode())
    if kind == "video_url":
        return VideoBlock(url=part["video_url"]["url"])
    # The table's unknown type: LlamaIndex's own union has no unknown block, so a block
    # it has and the guard does not read stands in for it.
    return CitableBlock(content=[TextBlock(text=str(part))], source="hologram", title="x")


def _image(url: str) -> ImageBlock:
    return ImageBlock(url=url)  # data:, http(s) and file:// URLs alike


def chat_messages(case: ConformanceCase) -> list[ChatMessage]:
    messages = []
    for message in case.messages:
        content = message["content"]
        parts = [content] if isinstance(content, str) else content or []
        extra = {k: message[k] for k in ("tool_calls", "tool_call_id") if k in message}
        messages.append(
            ChatMessage(
                role=ROLES[message["role"]],
                blocks=[block_of(p) for p in parts],
                additional_kwargs=extra,
            )
        )
    return messages


def forwarded(messages: Sequence[ChatMessage]) -> tuple[list[str], list[bytes | str]]:
    """The texts and images of what the wrapped LLM received."""
    texts: list[str] = []
    images: list[bytes | str] = []
    for message in messages:
        for block in message.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ImageBlock):
                if isinstance(block.image, bytes):
                    images.append(resolve_binary(raw_bytes=block.image).read())
                else:
                    images.append(str(block.url))
    return texts, images


def guard_then_call(vlm: MockLLMWithChatMemoryOfLastCall, rewriter: Rewriter, messages) -> None:
    vlm.chat(guard_messages(messages, rewriter, allow_local_files=False).messages)


def llm_chat(vlm: MockLLMWithChatMemoryOfLastCall, rewriter: Rewriter, messages) -> None:
    VLMGuardLLM(llm=vlm, rewriter=rewriter).chat(messages)


def llm_achat(vlm: MockLLMWithChatMemoryOfLastCall, rewriter: Rewriter, messages) -> None:
    asyncio.run(VLMGuardLLM(llm=vlm, rewriter=rewriter).achat(messages))


ENTRY_POINTS: dict[str, Callable[..., None]] = {
    "guard_messages": guard_then_call,
    "VLMGuardLLM.chat": llm_chat,
    "VLMGuardLLM.achat": llm_achat,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", conformance_cases(), ids=lambda case: case.name)
def test_conformance(case: ConformanceCase, entry: str, vlm) -> None:
    backend: ScriptedBackend = rewriting_backend()
    rewriter = Rewriter(backend)
    messages = chat_messages(case)
    call = ENTRY_POINTS[entry]

    if case.expect == "refused":
        assert case.error is not None
        with pytest.raises(case.error):
            call(vlm, rewriter, messages)
        assert vlm.last_chat_messages is None, "the wrapped LLM was called"
        return

    call(vlm, rewriter, messages)

    assert vlm.last_chat_messages is not None, "the wrapped LLM was never called"
    assert_case_seen(case, backend.calls)
    texts, images = forwarded(vlm.last_chat_messages)
    system_texts = [
        text
        for message, original in zip(messages, case.messages, strict=True)
        if original["role"] == "system"
        for text in forwarded([message])[0]
    ]
    assert_nothing_unseen(case, backend.calls, texts, images, allowed_texts=system_texts)
    assert any(REWRITE in text for text in texts), "the rewrite never reached the LLM"
    # Every image of the input reaches the LLM, in order.
    assert [image_digest(i) for i in images] == [image_digest(i) for i in forwarded(messages)[1]]


def test_the_table_covers_every_part_kind_the_converter_maps() -> None:
    kinds = set().union(*(case.part_kinds for case in conformance_cases()))
    assert kinds >= {"text", "image_url", "input_audio", "file", "video_url", "hologram"}
