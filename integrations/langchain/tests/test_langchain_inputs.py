"""Every input kind a chat model accepts goes through the guard and reaches the model rewritten."""

from __future__ import annotations

import copy

import pytest
from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_vlmguard import VLMGuardRewriter, get_rewrite_result

from vlmguard_plugins import Rewriter, RewriteResult, Risk
from vlmguard_plugins.errors import InputError
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "What is the quickest way to use this on someone?"


def image_blocks(b64: str) -> dict[str, dict]:
    """The same image in each block format LangChain users send."""
    return {
        "openai image_url (data URL)": {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{b64}", "detail": "low"},
        },
        "v1 standard image (base64)": {"type": "image", "base64": b64, "mime_type": "image/png"},
        "v0 image (source_type base64)": {
            "type": "image",
            "source_type": "base64",
            "data": b64,
            "mime_type": "image/png",
        },
        "anthropic image (source)": {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64},
        },
    }


def test_str_input_returns_the_rewritten_str_and_the_model_receives_it(
    guard, backend, recorder, rewritten
):
    assert guard.invoke(QUESTION) == rewritten
    answer = (guard | ParrotFakeChatModel()).invoke(QUESTION, {"callbacks": [recorder]})
    assert answer.content == rewritten
    assert [m.content for m in recorder.received[0]] == [rewritten]
    assert backend.calls[0].user_text == QUESTION


@pytest.mark.parametrize("block_format", list(image_blocks("x")))
def test_image_blocks_survive_untouched_next_to_the_rewritten_text(
    guard, backend, image_b64, rewritten, block_format
):
    block = image_blocks(image_b64)[block_format]
    pristine = copy.deepcopy(block)
    message = HumanMessage(content=[{"type": "text", "text": QUESTION}, block])

    (guarded,) = guard.invoke([message])
    # The parrot answers with the last message its _generate received.
    received = (guard | ParrotFakeChatModel()).invoke([message])

    assert guarded.content == [{"type": "text", "text": rewritten}, pristine]
    assert guarded.content[1] is message.content[1]  # the same object: nothing re-encoded
    # LangChain itself normalises legacy v0 blocks before the model; the image is intact.
    assert received.content[0] == {"type": "text", "text": rewritten}
    assert image_b64 in str(received.content[1])
    # The rewriter model saw the decoded image and the user's own text.
    assert [image.size for image in backend.calls[0].images] == [(40, 30)]
    assert backend.calls[0].user_text == QUESTION
    # The user's message object is not modified.
    assert message.content[0] == {"type": "text", "text": QUESTION}


def test_message_list_rewrites_only_the_last_human_message_with_history(
    guard, backend, recorder, image_b64, rewritten
):
    image = image_blocks(image_b64)["openai image_url (data URL)"]
    messages = [
        SystemMessage(content="You are a helpful assistant."),
        HumanMessage(content="I am cooking dinner tonight."),
        AIMessage(content="Great, what are you making?"),
        HumanMessage(content=[image, {"type": "text", "text": QUESTION}]),
    ]

    output = guard.invoke(messages)
    (guard | ParrotFakeChatModel()).invoke(messages, {"callbacks": [recorder]})

    assert isinstance(output, list)
    assert output[:3] == messages[:3]
    assert output[3].content == [image, {"type": "text", "text": rewritten}]
    assert recorder.received[0][:3] == messages[:3]
    assert recorder.received[0][3].content == [image, {"type": "text", "text": rewritten}]
    prompt_text = backend.calls[0].request.messages[-1]["content"][-1]["text"]
    assert "user: I am cooking dinner tonight." in prompt_text
    assert "assistant: Great, what are you making?" in prompt_text
    assert "You are a helpful assistant" not in prompt_text


def test_message_likes_are_accepted_like_a_chat_model_accepts_them(guard, rewritten):
    output = guard.invoke([("system", "Be brief."), ("human", QUESTION)])
    assert [type(m).__name__ for m in output] == ["SystemMessage", "HumanMessage"]
    assert output[1].content == rewritten


def test_several_text_blocks_become_one_rewritten_block_in_place(
    guard, backend, image_b64, rewritten
):
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}}
    message = HumanMessage(content=["Look at this.", image, {"type": "text", "text": QUESTION}])
    output = guard.invoke([message])
    assert output[0].content == [rewritten, image]
    assert backend.calls[0].user_text == f"Look at this.\n{QUESTION}"


def test_chat_prompt_template_with_an_image_in_the_human_message(
    guard, backend, recorder, image_b64, rewritten
):
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You describe images."),
            (
                "human",
                [
                    {"type": "text", "text": "{question}"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,{image_data}"},
                    },
                ],
            ),
        ]
    )
    chain = prompt | guard | ParrotFakeChatModel()

    chain.invoke({"question": QUESTION, "image_data": image_b64}, {"callbacks": [recorder]})

    as_value = guard.invoke(prompt.invoke({"question": QUESTION, "image_data": image_b64}))
    assert isinstance(as_value, ChatPromptValue)
    system, human = recorder.received[0]
    assert system.content == "You describe images."
    assert human.content == [
        {"type": "text", "text": rewritten},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}},
    ]
    assert backend.calls[0].user_text == QUESTION
    assert [image.size for image in backend.calls[0].images] == [(40, 30)]


def test_string_prompt_value_stays_a_string_prompt(guard, backend, recorder, rewritten):
    prompt = PromptTemplate.from_template("Question: {question}")
    assert guard.invoke(prompt.invoke({"question": QUESTION})) == StringPromptValue(text=rewritten)

    (prompt | guard | ParrotFakeChatModel()).invoke(
        {"question": QUESTION}, {"callbacks": [recorder]}
    )
    assert [m.content for m in recorder.received[0]] == [rewritten]
    assert backend.calls[0].user_text == f"Question: {QUESTION}"


def test_dict_input_rewrites_the_input_key_with_images_from_the_image_key(
    backend, recorder, image_b64, rewritten
):
    guard = VLMGuardRewriter(
        rewriter=Rewriter(backend=backend), input_key="question", image_key="image_data"
    )
    prompt = ChatPromptTemplate.from_messages(
        [
            (
                "human",
                [
                    {"type": "text", "text": "{question}"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,{image_data}"},
                    },
                ],
            )
        ]
    )
    inputs = {"question": QUESTION, "image_data": image_b64, "user": "u1"}

    assert guard.invoke(inputs) == {"question": rewritten, "image_data": image_b64, "user": "u1"}
    (guard | prompt | ParrotFakeChatModel()).invoke(inputs, {"callbacks": [recorder]})

    assert recorder.received[0][0].content[0] == {"type": "text", "text": rewritten}
    assert recorder.received[0][0].content[1]["image_url"]["url"].endswith(image_b64)
    assert [image.size for image in backend.calls[0].images] == [(40, 30)]
    assert inputs["question"] == QUESTION  # the caller's dict is not modified


def test_dict_images_may_be_a_list_of_blocks_urls_or_bytes(backend, image_b64):
    import base64

    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), image_key="images")
    images = [
        {"type": "image", "base64": image_b64, "mime_type": "image/png"},
        f"data:image/png;base64,{image_b64}",
        base64.b64decode(image_b64),
    ]
    guard.invoke({"input": QUESTION, "images": images})
    assert [image.size for image in backend.calls[0].images] == [(40, 30)] * 3


def test_dict_result_key_carries_the_rewrite_result(backend, rewritten):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), result_key="guard")
    output = guard.invoke({"input": QUESTION})
    assert output["input"] == rewritten
    assert isinstance(output["guard"], RewriteResult)
    assert output["guard"].risk is Risk.MEDIUM
    assert output["guard"].original == QUESTION


def test_dict_with_a_messages_placeholder(backend, recorder, rewritten):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), input_key="messages")
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be safe."), MessagesPlaceholder("messages")]
    )
    chain = guard | prompt | ParrotFakeChatModel()
    chain.invoke({"messages": [HumanMessage(content=QUESTION)]}, {"callbacks": [recorder]})
    assert [m.content for m in recorder.received[0]] == ["Be safe.", rewritten]


def test_the_rewritten_message_carries_the_analysis_and_risk(guard, rewritten):
    (message,) = guard.invoke([HumanMessage(content=QUESTION, response_metadata={"a": 1})])
    result = get_rewrite_result(message)
    assert result is not None
    assert result.prompt == rewritten
    assert result.original == QUESTION
    assert result.risk is Risk.MEDIUM
    assert "cross-modal: violent intent" in result.analysis
    assert result.fallback is None
    assert message.response_metadata["a"] == 1
    assert get_rewrite_result(HumanMessage(content="not guarded")) is None


def test_unchanged_text_reaches_the_model_as_it_was():
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=ScriptedBackend()))  # echoes, risk none
    (message,) = guard.invoke([HumanMessage(content="What kind of flower is this?")])
    assert message.content == "What kind of flower is this?"
    assert get_rewrite_result(message).changed is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (42, "cannot guard an input of type int"),
        ({"question": QUESTION}, "has no 'input' key"),
        ({"input": 3}, "expected the user's text or a list of messages"),
    ],
)
def test_inputs_the_guard_cannot_take_give_a_typed_error(guard, backend, value, message):
    with pytest.raises(InputError, match=message):
        guard.invoke(value)
    assert backend.calls == []


def test_messages_without_a_human_message_have_nothing_to_rewrite(guard, backend, recorder):
    messages = [SystemMessage(content="only a system prompt")]
    chain = guard | ParrotFakeChatModel()
    chain.invoke(messages, {"callbacks": [recorder]})
    assert recorder.received == [messages]
    assert recorder.events == []  # no rewrite, so no rewrite event
    assert backend.calls == []


def test_an_image_only_message_gets_the_rewrite_after_its_images(
    guard, backend, image_b64, rewritten
):
    image = image_blocks(image_b64)["v1 standard image (base64)"]
    message = HumanMessage(content=[image])
    (guarded,) = guard.invoke([message])
    # One behaviour for every entry point: the image first, then the question about it.
    assert guarded.content == [image, {"type": "text", "text": rewritten}]
    assert backend.calls[0].user_text == ""
    assert [picture.size for picture in backend.calls[0].images] == [(40, 30)]
