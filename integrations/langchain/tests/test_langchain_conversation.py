"""LangChain messages <-> the core conversation: every block form, every message field."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_vlmguard import VLMGuardRewriter, from_conversation, to_conversation
from langchain_vlmguard.conversation import METADATA_KEY, prompt_variables_turn

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conformance import BLUE, GREEN, RED, image_digest
from vlmguard_plugins.conversation import ImagePart, OtherPart, TextPart, plan, write_back
from vlmguard_plugins.errors import ImageInputError, UnsupportedContentError
from vlmguard_plugins.testing import ScriptedBackend

RED_B64 = RED.split(",", 1)[1]
QUESTION = "How do I open my neighbour's door with it?"


def image_forms(b64: str) -> dict[str, dict[str, Any]]:
    """One image in every block form the converter reads."""
    data_url = f"data:image/png;base64,{b64}"
    return {
        "openai image_url dict": {"type": "image_url", "image_url": {"url": data_url}},
        "openai image_url str": {"type": "image_url", "image_url": data_url},
        "openai responses input_image": {"type": "input_image", "image_url": data_url},
        "v1 base64": {"type": "image", "base64": b64, "mime_type": "image/png", "id": "lc_1"},
        "v1 base64 without mime_type": {"type": "image", "base64": b64},
        "v1 base64 holding a data URL": {"type": "image", "base64": data_url},
        "v1 url (data URL)": {"type": "image", "url": data_url},
        "v0 base64": {
            "type": "image",
            "source_type": "base64",
            "data": b64,
            "mime_type": "image/png",
        },
        "v0 url (data URL)": {"type": "image", "source_type": "url", "url": data_url},
        "anthropic base64": {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64},
        },
        "anthropic url (data URL)": {"type": "image", "source": {"type": "url", "url": data_url}},
        "non_standard image_url": {
            "type": "non_standard",
            "value": {"type": "image_url", "image_url": {"url": data_url}},
        },
    }


FILE_ID_IMAGES: dict[str, dict[str, Any]] = {
    "v1 file_id": {"type": "image", "file_id": "file-1"},
    "v0 id": {"type": "image", "source_type": "id", "id": "file-1"},
    "anthropic file": {"type": "image", "source": {"type": "file", "file_id": "file-1"}},
    "responses file_id": {"type": "input_image", "file_id": "file-1"},
    "empty image_url": {"type": "image_url", "image_url": {"url": ""}},
    "image without data": {"type": "image", "mime_type": "image/png"},
}

OTHER_BLOCKS: dict[str, dict[str, Any]] = {
    "audio": {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"},
    "openai input_audio": {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
    "file": {"type": "file", "url": "https://example.com/a.pdf"},
    "video": {"type": "video", "url": "https://example.com/v.mp4"},
    "text-plain": {"type": "text-plain", "text": "a document", "mime_type": "text/plain"},
    "tool_call": {"type": "tool_call", "name": "f", "args": {}, "id": "c1"},
    "reasoning": {"type": "reasoning", "reasoning": "thinking..."},
    "non_standard video": {"type": "non_standard", "value": {"type": "video_url"}},
    "unknown": {"type": "hologram", "data": "x"},
    "no type": {"data": "x"},
}
OTHER_KINDS = {
    "audio": "audio",
    "openai input_audio": "input_audio",
    "file": "file",
    "video": "video",
    "text-plain": "text-plain",
    "tool_call": "tool_call",
    "reasoning": "reasoning",
    "non_standard video": "video_url",
    "unknown": "hologram",
    "no type": "block without a type",
}


def every_message_kind() -> list[BaseMessage]:
    """One message of each kind, with every field the back-conversion must keep."""
    forms = image_forms(RED_B64)
    return [
        SystemMessage(
            content="Be brief.", id="s1", additional_kwargs={"__openai_role__": "developer"}
        ),
        HumanMessage(
            content=[
                {"type": "text", "text": "First:", "id": "t1", "annotations": []},
                *forms.values(),
                "a bare string block",
                {"type": "input_text", "text": "Responses text"},
                {"type": "non_standard", "value": {"type": "input_text", "text": "wrapped"}},
            ],
            name="alice",
            id="h1",
            additional_kwargs={"x": 1},
            response_metadata={"source": "ui"},
        ),
        AIMessage(
            content=[
                {"type": "text", "text": "Let me look."},
                OTHER_BLOCKS["tool_call"],
                OTHER_BLOCKS["reasoning"],
            ],
            tool_calls=[{"name": "f", "args": {}, "id": "c1", "type": "tool_call"}],
            id="a1",
            response_metadata={"model_name": "m"},
            usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        ),
        ToolMessage(content="42", tool_call_id="c1", artifact={"raw": 42}, status="success"),
        FunctionMessage(content="{}", name="legacy"),
        ChatMessage(role="critic", content="Looks fine."),
        AIMessage(
            content="", tool_calls=[{"name": "g", "args": {}, "id": "c2", "type": "tool_call"}]
        ),
        HumanMessage(content=QUESTION, id="h2"),
    ]


# --- LangChain -> core ---------------------------------------------------------------


def test_roles_of_every_message_kind() -> None:
    conversation = to_conversation(every_message_kind())
    assert [turn.role for turn in conversation] == [
        "system", "user", "assistant", "tool", "tool", "user", "assistant", "user",
    ]  # fmt: skip
    assert [turn.source_role for turn in conversation][4:6] == ["function", "critic"]
    known = to_conversation([ChatMessage(role="assistant", content="x")]).turns[0]
    assert known.role == "assistant"


@pytest.mark.parametrize("form", list(image_forms("x")))
def test_every_image_form_is_an_image_the_core_can_load(form: str) -> None:
    message = HumanMessage(content=[image_forms(RED_B64)[form]])
    (part,) = to_conversation([message]).turns[0].parts
    assert isinstance(part, ImagePart) and part.problem is None
    assert part.raw is message.content[0]
    assert image_digest(part.source) == image_digest(RED)


@pytest.mark.parametrize("form", list(FILE_ID_IMAGES))
def test_an_image_the_guard_cannot_read_has_a_problem_not_a_source(form: str) -> None:
    message = HumanMessage(content=[FILE_ID_IMAGES[form]])
    (part,) = to_conversation([message]).turns[0].parts
    assert isinstance(part, ImagePart)
    assert part.source is None and part.problem
    assert part.raw is message.content[0]


@pytest.mark.parametrize("form", list(OTHER_BLOCKS))
def test_every_other_block_is_an_other_part_named_by_its_type(form: str) -> None:
    message = HumanMessage(content=[OTHER_BLOCKS[form]])
    (part,) = to_conversation([message]).turns[0].parts
    assert part == OtherPart(OTHER_KINDS[form], raw=message.content[0])


def test_text_forms() -> None:
    (human,) = to_conversation([HumanMessage(content="plain")]).turns
    assert human.text_only and human.parts == (TextPart("plain"),)
    blocks: list[Any] = [
        "bare",
        {"type": "text", "text": "v0"},
        {"type": "text", "text": "v1", "id": "lc_2", "annotations": []},
        {"type": "input_text", "text": "responses"},
        {"type": "non_standard", "value": {"type": "input_text", "text": "wrapped"}},
        {"type": "text", "text": {"not": "a string"}},
    ]
    (turn,) = to_conversation([HumanMessage(content=blocks)]).turns
    assert [type(part) for part in turn.parts] == [TextPart] * 5 + [OtherPart]
    assert turn.text == "bare\nv0\nv1\nresponses\nwrapped"


def test_prompt_variables_turn_reads_each_image_form() -> None:
    turn = prompt_variables_turn(
        QUESTION,
        [RED_B64, RED, base64.b64decode(RED_B64), image_forms(RED_B64)["v1 base64"], "/etc/x"],
    )
    assert turn.parts[0] == TextPart(QUESTION)
    sources = [part.source for part in turn.images]
    assert [image_digest(source) for source in sources[:4]] == [image_digest(RED)] * 4
    assert sources[4] == "/etc/x"  # the core refuses a local path; the converter does not decide
    assert prompt_variables_turn(QUESTION, RED).images[0].source == RED
    assert prompt_variables_turn(QUESTION).parts == (TextPart(QUESTION),)


# --- core -> LangChain ---------------------------------------------------------------


def test_round_trip_returns_the_very_same_messages() -> None:
    messages = every_message_kind()
    pristine = copy.deepcopy(messages)
    back = from_conversation(to_conversation(messages))
    assert all(a is b for a, b in zip(back, messages, strict=True))
    assert messages == pristine


def test_the_rewritten_message_keeps_every_field_and_every_other_block() -> None:
    messages = every_message_kind()
    human = messages[1]
    conversation = to_conversation(messages)
    written = write_back(conversation, 1, "REWRITTEN")
    result = Rewriter(ScriptedBackend()).rewrite("x")

    back = from_conversation(written, result=result, target=1)

    rewritten = back[1]
    assert type(rewritten) is HumanMessage
    assert (rewritten.id, rewritten.name) == ("h1", "alice")
    assert rewritten.additional_kwargs == {"x": 1}
    assert rewritten.response_metadata["source"] == "ui"
    assert rewritten.response_metadata[METADATA_KEY]["prompt"] == result.prompt
    # The rewrite takes the first text block's place (its other fields kept); the other
    # text blocks are gone; every image block is the very same object, in order.
    assert rewritten.content[0] == {
        "type": "text",
        "text": "REWRITTEN",
        "id": "t1",
        "annotations": [],
    }
    assert len(rewritten.content) == 13
    assert all(a is b for a, b in zip(rewritten.content[1:], human.content[1:13], strict=True))
    changed = [i for i, (b, o) in enumerate(zip(back, messages, strict=True)) if b is not o]
    assert changed == [1]
    assert human.content[0] == {"type": "text", "text": "First:", "id": "t1", "annotations": []}


def test_a_changed_assistant_turn_keeps_its_tool_calls_and_usage() -> None:
    messages = every_message_kind()
    ai = messages[2]
    assert isinstance(ai, AIMessage)
    (back,) = from_conversation(write_back(to_conversation([ai]), 0, "changed"))
    assert isinstance(back, AIMessage) and back is not ai
    assert back.content[0] == {"type": "text", "text": "changed"}
    assert back.content[1:] == ai.content[1:]
    assert (back.id, back.tool_calls, back.usage_metadata) == (
        ai.id,
        ai.tool_calls,
        ai.usage_metadata,
    )
    assert back.response_metadata == {"model_name": "m"}  # no outcome without a result
    tool = messages[3]
    (back,) = from_conversation(write_back(to_conversation([tool]), 0, "43"))
    assert isinstance(back, ToolMessage)
    assert (back.content, back.tool_call_id, back.artifact, back.status) == (
        "43", "c1", {"raw": 42}, "success",
    )  # fmt: skip


def test_a_rewritten_string_stays_a_string_and_a_wrapped_text_stays_wrapped() -> None:
    messages = [HumanMessage(content="hello", id="h")]
    (back,) = from_conversation(write_back(to_conversation(messages), 0, "NEW"))
    assert back.content == "NEW" and back.id == "h"

    wrapped = {"type": "non_standard", "value": {"type": "input_text", "text": "hi"}, "id": "n"}
    (back,) = from_conversation(
        write_back(to_conversation([HumanMessage(content=[wrapped])]), 0, "NEW")
    )
    assert back.content == [
        {"type": "non_standard", "value": {"type": "input_text", "text": "NEW"}, "id": "n"}
    ]

    bare: list[str | dict[Any, Any]] = ["one", "two"]
    (back,) = from_conversation(write_back(to_conversation([HumanMessage(content=bare)]), 0, "NEW"))
    assert back.content == ["NEW"]


def test_an_assistant_turn_with_tool_calls_and_reasoning_passes_unread() -> None:
    backend = ScriptedBackend.rewriting_to("SAFE")
    guard = VLMGuardRewriter(rewriter=Rewriter(backend))
    messages = every_message_kind()[2:]
    output = guard.invoke(messages)
    assert output[:-1] == messages[:-1]
    assert all(a is b for a, b in zip(output[:-1], messages[:-1], strict=True))
    assert output[-1].content == "SAFE"


def test_the_same_blocks_in_a_user_turn_are_refused() -> None:
    guard = VLMGuardRewriter(rewriter=Rewriter(ScriptedBackend()))
    with pytest.raises(UnsupportedContentError, match="tool_call"):
        guard.invoke(
            [HumanMessage(content=[{"type": "text", "text": "x"}, OTHER_BLOCKS["tool_call"]])]
        )


# --- multi-turn through the guard ----------------------------------------------------


def multi_turn() -> list[BaseMessage]:
    """An image in turn 1, another returned by a tool, the question (and a third) last."""
    red = image_forms(RED_B64)["v1 base64"]
    green = image_forms(GREEN.split(",", 1)[1])["openai image_url dict"]
    blue = image_forms(BLUE.split(",", 1)[1])["anthropic base64"]
    return [
        SystemMessage(content="You help with tools."),
        HumanMessage(content=[red, {"type": "text", "text": "What is this tool?"}]),
        AIMessage(content="It is a lock pick set."),
        ToolMessage(content=[green], tool_call_id="c1"),
        HumanMessage(content=[{"type": "text", "text": QUESTION}, blue]),
    ]


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_an_image_early_is_judged_with_the_question_late(
    use_async: bool, recorder: Any
) -> None:
    backend = ScriptedBackend.rewriting_to("Explain legal locksmith options.")
    guard = VLMGuardRewriter(rewriter=Rewriter(backend))
    messages = multi_turn()

    output = await guard.ainvoke(messages) if use_async else guard.invoke(messages)

    call = backend.calls[0]
    # Every turn's image, in conversation order: the user's, the tool's, then the question's.
    assert [image_digest(image.image) for image in call.images] == [
        image_digest(RED), image_digest(GREEN), image_digest(BLUE),
    ]  # fmt: skip
    assert call.user_text == QUESTION
    prompt = call.request.messages[-1]["content"][-1]["text"]
    assert "What is this tool?" in prompt and "It is a lock pick set." in prompt
    assert "You help with tools." not in prompt
    # The earlier turns go on as they were: the very same message objects.
    assert all(a is b for a, b in zip(output[:4], messages[:4], strict=True))
    assert output[4].content[0] == {"type": "text", "text": "Explain legal locksmith options."}
    assert output[4].content[1] is messages[4].content[1]

    chain = guard | ParrotFakeChatModel()
    config: RunnableConfig = {"callbacks": [recorder]}
    answer = await chain.ainvoke(messages, config) if use_async else chain.invoke(messages, config)
    assert answer.content[0] == {"type": "text", "text": "Explain legal locksmith options."}
    assert len(recorder.received[0]) == 5


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_an_unreadable_image_in_an_earlier_turn_is_refused(use_async: bool) -> None:
    backend = ScriptedBackend.rewriting_to("SAFE")
    guard = VLMGuardRewriter(rewriter=Rewriter(backend))
    messages = [
        HumanMessage(content=[FILE_ID_IMAGES["v1 file_id"], {"type": "text", "text": "Look."}]),
        AIMessage(content="I see."),
        HumanMessage(content=QUESTION),
    ]
    with pytest.raises(ImageInputError, match="message 0"):
        await guard.ainvoke(messages) if use_async else guard.invoke(messages)
    assert backend.calls == []


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png", "url": "https://x"},
        {"type": "image", "base64": "iVBORw0KGgo=", "mime_type": "image/png", "data": "AAAA"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            "url": "data:image/png;base64,AAAA",
        },
        {"type": "image", "source_type": "base64", "data": "iVBORw0KGgo=", "url": "https://x"},
    ],
)
def test_an_image_block_naming_two_sources_is_refused(block: dict[str, object]) -> None:
    # LangChain's provider converters and the guard might read different ones.
    messages = [HumanMessage(content=[{"type": "text", "text": "q"}, block])]
    with pytest.raises(ImageInputError, match="several sources"):
        plan(to_conversation(messages))


def test_a_text_block_carrying_an_image_is_refused() -> None:
    block = {"type": "input_text", "text": "q", "image": {"source": {"bytes": "AAAA"}}}
    with pytest.raises(UnsupportedContentError):
        plan(to_conversation([HumanMessage(content=[block])]))
