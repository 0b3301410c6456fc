"""The benchmark defences run the conformance table like every other entry point."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    ContentAudio,
    ContentImage,
    ContentText,
    ModelName,
)
from inspect_ai.solver import TaskState
from inspect_ai.tool import ToolCall

from vlmguard_plugins import Rewriter
from vlmguard_plugins.bench.defenses import static_shield, vlmguard_defense
from vlmguard_plugins.conformance import (
    GREEN,
    RED,
    REWRITE,
    ConformanceCase,
    assert_case_seen,
    assert_nothing_unseen,
    conformance_cases,
    image_digest,
    rewriting_backend,
)
from vlmguard_plugins.errors import InputError, UnsupportedContentError
from vlmguard_plugins.policy import shield_prompt


async def _inspect_messages(case: ConformanceCase) -> list[ChatMessage]:
    """The case's OpenAI-form messages as inspect messages, part for part."""
    messages: list[ChatMessage] = []
    for message in case.messages:
        content = message.get("content")
        parts: str | list[Any] = (
            [_inspect_part(p) for p in content] if isinstance(content, list) else content or ""
        )
        role = message["role"]
        if role == "system":
            messages.append(ChatMessageSystem(content=parts))
        elif role == "assistant":
            calls = [
                ToolCall(
                    id=call["id"],
                    function=call["function"]["name"],
                    arguments=json.loads(call["function"].get("arguments") or "{}"),
                )
                for call in message.get("tool_calls") or []
            ]
            messages.append(ChatMessageAssistant(content=parts, tool_calls=calls or None))
        elif role == "tool":
            messages.append(ChatMessageTool(content=parts, tool_call_id=message["tool_call_id"]))
        else:
            messages.append(ChatMessageUser(content=parts))
    return messages


def _inspect_part(part: dict[str, Any]) -> Any:
    kind = part["type"]
    if kind in ("text", "input_text"):
        return ContentText(text=part["text"])
    if kind == "image_url":
        return ContentImage(image=part["image_url"]["url"])
    if kind == "input_image":
        return ContentImage(image=part["image_url"])
    return ContentAudio(audio="data:audio/wav;base64,AAAA", format="wav")


def _state(messages: list[ChatMessage]) -> TaskState:
    return TaskState(ModelName("mockllm/model"), "s1", 0, messages, messages)


class RecordingGenerate:
    """The target model's side of the solver: records the messages it was sent."""

    def __init__(self) -> None:
        self.received: list[ChatMessage] | None = None

    async def __call__(
        self,
        state: TaskState,
        tool_calls: Literal["loop", "single", "none"] = "loop",
        **_: Any,
    ) -> TaskState:
        self.received = list(state.messages)
        return state


def _texts_and_images(messages: list[ChatMessage]) -> tuple[list[str], list[str]]:
    texts, images = [], []
    for message in messages:
        if isinstance(message.content, str):
            texts.append(message.content)
            continue
        for part in message.content:
            if isinstance(part, ContentText):
                texts.append(part.text)
            elif isinstance(part, ContentImage):
                images.append(part.image)
    return texts, images


@pytest.mark.parametrize("case", conformance_cases(), ids=lambda case: case.name)
async def test_vlmguard_defence_conformance(case: ConformanceCase) -> None:
    backend = rewriting_backend()
    solver = vlmguard_defense(rewriter=Rewriter(backend))
    messages = await _inspect_messages(case)
    generate = RecordingGenerate()
    if case.expect == "refused":
        # inspect's audio part stands for every unreadable kind; file:// is still a URL.
        expected = UnsupportedContentError if case.error is UnsupportedContentError else InputError
        with pytest.raises(expected):
            await solver(_state(messages), generate)
        assert generate.received is None
        return
    await solver(_state(messages), generate)
    assert generate.received is not None
    texts, images = _texts_and_images(generate.received)
    assert any(REWRITE in text for text in texts)
    assert_case_seen(case, backend.calls)
    system = [t for m in messages if m.role == "system" for t in _texts_and_images([m])[0]]
    assert_nothing_unseen(case, backend.calls, texts, images, allowed_texts=system)
    assert [image_digest(i) for i in images] == [
        image_digest(i) for i in _texts_and_images(messages)[1]
    ]


async def test_defences_keep_the_image_where_the_benchmark_put_it() -> None:
    messages: list[ChatMessage] = [
        ChatMessageUser(content=[ContentText(text="Look:"), ContentImage(image=RED)])
    ]
    generate = RecordingGenerate()
    await static_shield()(_state(messages), generate)
    assert generate.received is not None
    content = generate.received[0].content
    assert isinstance(content, list)
    assert isinstance(content[0], ContentText) and content[0].text == shield_prompt("Look:")
    assert isinstance(content[1], ContentImage) and content[1].image == RED

    image_only: list[ChatMessage] = [ChatMessageUser(content=[ContentImage(image=GREEN)])]
    generate = RecordingGenerate()
    await vlmguard_defense(rewriter=Rewriter(rewriting_backend()))(_state(image_only), generate)
    assert generate.received is not None
    content = generate.received[0].content
    assert isinstance(content, list) and isinstance(content[0], ContentImage)
    assert isinstance(content[1], ContentText) and content[1].text == REWRITE
