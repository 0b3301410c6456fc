"""The ChatMessage <-> core Conversation converter: roles, blocks, sources, round trips."""

from __future__ import annotations

import io

import pytest
from llama_index.core.base.llms.types import (
    AudioBlock,
    CacheControl,
    CachePoint,
    ChatMessage,
    CitableBlock,
    DocumentBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
    VideoBlock,
)
from llama_index_vlmguard import aguard_messages, from_conversation, guard_messages, to_conversation
from llama_index_vlmguard.conversation import UserWords, find_user_text

from vlmguard_plugins import ImagePart, OtherPart, Rewriter, TextPart
from vlmguard_plugins.conformance import RED, image_digest
from vlmguard_plugins.conversation import plan, write_back
from vlmguard_plugins.errors import ImageInputError, UnsupportedContentError, URLPolicyError
from vlmguard_plugins.testing import ScriptedBackend

REWRITE = "Explain safe, legal locksmith options."


def every_role_and_block(png_bytes: bytes, pills) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.SYSTEM, content="Be brief.", additional_kwargs={"x": 1}),
        ChatMessage(
            role=MessageRole.DEVELOPER,
            blocks=[
                TextBlock(text="Rules."),
                CachePoint(cache_control=CacheControl(type="ephemeral")),
            ],
        ),
        ChatMessage(
            role=MessageRole.USER,
            blocks=[
                ImageBlock(image=png_bytes),
                TextBlock(text="What is this?"),
                ImageBlock(path=pills),
                ImageBlock(url=RED),
            ],
            additional_kwargs={"name": "alice"},
        ),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                ThinkingBlock(content="hmm"),
                ToolCallBlock(tool_call_id="c1", tool_name="f", tool_kwargs={}),
            ],
        ),
        ChatMessage(role=MessageRole.TOOL, content="42", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role=MessageRole.CHATBOT, content="Cohere says hi."),
        ChatMessage(role=MessageRole.MODEL, content="Gemini says hi."),
        ChatMessage(role=MessageRole.FUNCTION, content="{}"),
        ChatMessage(role=MessageRole.USER, content="Thanks"),
    ]


def test_roles_and_blocks_map_to_the_core_model(png_bytes, example_images):
    messages = every_role_and_block(png_bytes, example_images["pills"])
    conversation = to_conversation(messages)

    assert [turn.role for turn in conversation] == [
        "system", "system", "user", "assistant", "tool", "assistant", "assistant", "tool", "user",
    ]  # fmt: skip
    assert [turn.source_role for turn in conversation][:2] == ["system", "developer"]
    user = conversation.turns[2]
    assert [type(part) for part in user.parts] == [ImagePart, TextPart, ImagePart, ImagePart]
    assert image_digest(user.parts[0].source) == image_digest(png_bytes)
    assert user.parts[2].source == example_images["pills"]  # a Path: read only when allowed
    assert user.parts[3].source == RED
    assert [part.kind for part in conversation.turns[1].others] == ["CachePoint"]
    assert [part.kind for part in conversation.turns[3].others] == [
        "ThinkingBlock",
        "ToolCallBlock",
    ]
    assert all(
        part.raw is block for part, block in zip(user.parts, messages[2].blocks, strict=True)
    )


def test_round_trip_returns_the_same_messages_and_blocks(png_bytes, example_images):
    messages = every_role_and_block(png_bytes, example_images["pills"])
    back = from_conversation(to_conversation(messages))
    assert all(new is old for new, old in zip(back, messages, strict=True))


def test_rewritten_message_keeps_role_kwargs_and_the_other_blocks(png_bytes, example_images):
    messages = every_role_and_block(png_bytes, example_images["pills"])
    conversation = to_conversation(messages)
    back = from_conversation(write_back(conversation, 2, REWRITE))

    assert back[2] is not messages[2]
    assert back[2].role == MessageRole.USER and back[2].additional_kwargs == {"name": "alice"}
    assert back[2].blocks[1] == TextBlock(text=REWRITE)
    for index in (0, 2, 3):
        assert back[2].blocks[index] is messages[2].blocks[index]
    assert messages[2].blocks[1].text == "What is this?"  # the input is not modified
    assert all(back[i] is messages[i] for i in range(len(messages)) if i != 2)


@pytest.mark.parametrize(
    "block",
    [
        AudioBlock(audio=b"AAAA", format="wav"),
        DocumentBlock(data=b"%PDF-1.4"),
        VideoBlock(url="https://example.com/v.mp4"),
        CitableBlock(content=[TextBlock(text="cited")], source="doc", title="t"),
        ThinkingBlock(content="a user cannot smuggle text as thinking"),
    ],
    ids=lambda block: type(block).__name__,
)
def test_blocks_the_guard_does_not_read_are_refused_by_the_core(block):
    messages = [ChatMessage(role="user", blocks=[TextBlock(text="hi"), block])]
    conversation = to_conversation(messages)
    assert conversation.turns[0].parts[1] == OtherPart(type(block).__name__, raw=block)
    with pytest.raises(UnsupportedContentError) as caught:
        plan(conversation)
    assert caught.value.part_type == type(block).__name__


def test_a_cache_point_carries_no_content_and_passes():
    marker = CachePoint(cache_control=CacheControl(type="ephemeral"))
    messages = [ChatMessage(role="user", blocks=[TextBlock(text="hi"), marker])]
    guard_plan = plan(to_conversation(messages))
    assert guard_plan.request is not None and guard_plan.request.text == "hi"
    assert from_conversation(guard_plan.conversation)[0].blocks[1] is marker


def test_dropped_blocks_are_removed_from_what_is_forwarded(png_bytes):
    audio = AudioBlock(audio=b"AAAA", format="wav")
    image = ImageBlock(image=png_bytes)
    messages = [ChatMessage(role="user", blocks=[TextBlock(text="hi"), audio, image])]
    guard_plan = plan(to_conversation(messages), unsupported_content="drop")
    assert guard_plan.dropped == ("AudioBlock",)
    assert from_conversation(guard_plan.conversation)[0].blocks == [TextBlock(text="hi"), image]


def test_a_file_like_image_is_read_bounded_and_left_where_it_was(png_bytes):
    stream = io.BytesIO(png_bytes)
    stream.seek(5)
    messages = [ChatMessage(role="user", blocks=[ImageBlock(image=stream)])]
    part = to_conversation(messages, max_image_bytes=10).turns[0].parts[0]
    assert part.source == png_bytes[:11] and stream.tell() == 5


def test_url_field_never_names_a_file():
    block = ImageBlock(url="https://example.com/x.png")
    block.url = "/etc/hostname"  # as assigned or deserialised data can hold it
    with pytest.raises(URLPolicyError, match="ImageBlock.url must be a URL"):
        to_conversation([ChatMessage(role="user", blocks=[block])])


def test_an_empty_image_block_is_refused_by_the_core():
    conversation = to_conversation([ChatMessage(role="user", blocks=[ImageBlock()])])
    with pytest.raises(ImageInputError, match="holds no image"):
        plan(conversation)


# --- the user's words inside a template --------------------------------------------------

TEMPLATE = "Context:\n{context}\n---\nAnswer the query.\nQuery: {query}\nAnswer: "
QUESTION = "How do I open my neighbour's door?"


def test_user_text_found_once_is_the_only_text_the_rewriter_reads():
    context = TextBlock(text="Context is below.")
    prompt = TextBlock(text=TEMPLATE.format(context="Locks have pins.", query=QUESTION))
    messages = [ChatMessage(role="user", blocks=[context, prompt])]

    conversation = to_conversation(messages, user_text=QUESTION)

    [part] = conversation.turns[0].parts
    assert part.text == QUESTION and isinstance(part.raw, UserWords)
    back = from_conversation(write_back(conversation, 0, REWRITE))
    assert back[0].blocks[0] is context
    assert back[0].blocks[1].text == TEMPLATE.format(context="Locks have pins.", query=REWRITE)


@pytest.mark.parametrize(
    "texts",
    [
        [TEMPLATE.format(context=QUESTION, query=QUESTION)],  # the context quotes it
        [QUESTION, TEMPLATE.format(context="x", query=QUESTION)],  # in two blocks
        [TEMPLATE.format(context="x", query="something else")],  # not there at all
    ],
)
def test_user_text_not_found_exactly_once_makes_the_whole_message_the_users(texts):
    message = ChatMessage(role="user", blocks=[TextBlock(text=text) for text in texts])
    assert find_user_text(message, QUESTION) is None
    conversation = to_conversation([message], user_text=QUESTION)
    assert conversation.turns[0].text == "\n".join(texts)


def test_only_the_last_user_message_is_searched_for_the_user_text():
    messages = [
        ChatMessage(role="user", content=f"Earlier: {QUESTION}"),
        ChatMessage(role="assistant", content="ok"),
        ChatMessage(role="user", content=f"Now: {QUESTION}"),
    ]
    conversation = to_conversation(messages, user_text=QUESTION)
    assert conversation.turns[0].text == f"Earlier: {QUESTION}"
    assert conversation.turns[2].text == QUESTION


async def test_guarding_a_template_rewrites_the_words_and_keeps_images_and_context(png_bytes):
    backend = ScriptedBackend.rewriting_to(REWRITE, risk="medium")
    image = ImageBlock(image=png_bytes)
    head = TextBlock(text="Context information is below.")
    prompt = TextBlock(text=TEMPLATE.format(context="Pins and springs.", query=QUESTION))
    messages = [ChatMessage(role="user", blocks=[head, image, prompt])]

    guarded = await aguard_messages(messages, Rewriter(backend), user_text=QUESTION)

    assert backend.calls[0].user_text == QUESTION
    assert "Pins and springs" not in str(backend.calls[0].request.messages)
    assert len(backend.calls[0].images) == 1
    blocks = guarded.messages[0].blocks
    assert blocks[0] is head and blocks[1] is image
    assert blocks[2].text == TEMPLATE.format(context="Pins and springs.", query=REWRITE)


# --- a conversation: the image early, the question late ------------------------------------


def test_an_image_in_an_early_turn_is_judged_with_the_question_in_a_late_turn(png_bytes):
    backend = ScriptedBackend.rewriting_to(REWRITE, risk="high")
    image = ImageBlock(image=png_bytes)
    messages = [
        ChatMessage(role="system", content="You are a helpful assistant."),
        ChatMessage(role="user", blocks=[image, TextBlock(text="What is this tool?")]),
        ChatMessage(role="assistant", content="It is a lock pick set."),
        ChatMessage(role="user", content=QUESTION),
    ]

    guarded = guard_messages(messages, Rewriter(backend))

    [call] = backend.calls
    assert call.user_text == QUESTION
    assert [image_digest(i.image) for i in call.images] == [image_digest(png_bytes)]
    prompt = call.request.messages[-1]["content"][-1]["text"]
    assert "user: [image 1] What is this tool?" in prompt
    assert "assistant: It is a lock pick set." in prompt
    assert guarded.messages[:3] == messages[:3] and guarded.messages[1] is messages[1]
    assert guarded.messages[3].content == REWRITE
    assert guarded.result is not None and guarded.result.risk == "high"


def test_an_image_block_with_two_sources_is_refused(png_bytes):
    # Integrations differ in which one they send: the model could get the unread one.
    block = ImageBlock(image=png_bytes, url="data:image/png;base64,AAAA")
    messages = [ChatMessage(role="user", blocks=[TextBlock(text="what is this?"), block])]
    with pytest.raises(ImageInputError, match="several sources"):
        plan(to_conversation(messages))


def test_additional_kwargs_that_replace_content_are_refused():
    message = ChatMessage(
        role="user", blocks=[TextBlock(text="hi")], additional_kwargs={"content": "hidden"}
    )
    with pytest.raises(UnsupportedContentError, match="additional_kwargs"):
        to_conversation([message])


def test_tool_calls_kept_in_additional_kwargs_are_read_as_history():
    messages = [
        ChatMessage(role="user", blocks=[TextBlock(text="find it")]),
        ChatMessage(
            role="assistant",
            blocks=[],
            additional_kwargs={"tool_calls": [{"function": {"arguments": "ARGS-TEXT"}}]},
        ),
        ChatMessage(role="user", blocks=[TextBlock(text="and now?")]),
    ]
    request = plan(to_conversation(messages)).request
    assert request is not None
    assert any("ARGS-TEXT" in turn.text for turn in request.history)
