"""The ``vlmguard check tool input`` rail: conversations that end in tool results.

NeMo (Colang 1.0) runs no input rail for a request whose last message is a tool
message; with tool input rails configured it emits ``UserToolMessages`` instead.  These
tests send such requests through ``LLMRails`` with the recording main LLM and assert
what the rewriter read and what the main LLM really received.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from nemoguardrails_vlmguard import (
    VLMGuardRail,
    conversation_from_tool_messages,
    get_rail,
)

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conformance import BLUE, GREEN, RED, image_digest, seen_by_rewriter
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.testing import ScriptedBackend

REFUSAL = "I'm sorry, I can't respond to that."
ANSWER = "Here is a careful answer."
REQUEST = "Find the product photo and tell me how to use it."


def _text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _call(call_id: str, name: str = "fetch_photo") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": "{}"}}


def tool_round(*results: list[dict[str, Any]], request: str = REQUEST) -> list[dict[str, Any]]:
    """The user's request, the model's tool calls, then one tool message per result."""
    ids = [f"call_{index}" for index in range(len(results))]
    return [
        {"role": "user", "content": request},
        {"role": "assistant", "content": None, "tool_calls": [_call(i) for i in ids]},
        *(
            {"role": "tool", "tool_call_id": i, "content": content}
            for i, content in zip(ids, results, strict=True)
        ),
    ]


async def test_a_benign_tool_image_is_forwarded_after_the_rewriter_saw_it(write_config, make_app):
    app, llm = make_app(write_config({"backend": "scripted"}))  # echoes "unchanged, no risk"
    messages = tool_round([_text("Photo of the product."), _image(BLUE)])

    response = await app.generate_async(
        messages=copy.deepcopy(messages), options={"output_vars": ["vlmguard"]}
    )

    assert response.response[-1]["content"] == ANSWER
    verdict = response.output_data["vlmguard"]
    assert verdict.action == "unchanged" and verdict.risk == "none"
    (call,) = get_rail(app).rewriter.backend.calls
    prompt, digests = seen_by_rewriter([call])
    assert call.user_text == REQUEST  # the request is what the rewriter rewrites
    assert "Photo of the product." in prompt  # the tool text is read as history
    assert digests == {image_digest(BLUE)}
    # The main LLM got the conversation exactly as it was sent, tool image included.
    assert llm.last_messages == [
        {"role": message["role"], "content": message["content"]} for message in messages
    ]


async def test_a_risky_tool_result_puts_the_rewrite_in_place_of_the_request(
    write_config, make_app, knife_part, rewrite_text
):
    app, llm = make_app(write_config())  # every rewrite: REWRITE, risk medium
    tool_content = [_text("Product photo."), knife_part]

    response = await app.generate_async(
        messages=tool_round(copy.deepcopy(tool_content)), options={"output_vars": ["vlmguard"]}
    )

    assert response.response[-1]["content"] == ANSWER
    verdict = response.output_data["vlmguard"]
    assert verdict.action == "rewrite" and verdict.risk == "medium"
    assert verdict.original == REQUEST and verdict.prompt == rewrite_text
    received = llm.last_messages
    assert [m["role"] for m in received] == ["user", "assistant", "tool"]
    assert received[0]["content"] == rewrite_text
    assert received[2]["content"] == tool_content  # tool results are data, never rewritten


async def test_a_block_verdict_refuses_and_the_main_llm_is_never_called(write_config, make_app):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["no contract here"]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))

    response = await app.generate_async(
        messages=tool_round([_text("Photo."), _image(BLUE)]),
        options={"output_vars": ["vlmguard"]},
    )

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    verdict = response.output_data["vlmguard"]
    assert verdict.is_blocked and verdict.action == "block" and verdict.risk == "unknown"


async def test_a_refusal_raises_the_tool_input_rail_exception_when_enabled(write_config, make_app):
    app, llm = make_app(write_config(extra_yml="enable_rails_exceptions: true\n"))
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    reply = await app.generate_async(messages=tool_round([_text("Recording."), audio]))

    assert reply["role"] == "exception"
    assert reply["content"]["type"] == "ToolInputRailException"
    assert llm.prompts == []


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}},
        {"type": "hologram", "data": "x"},
    ],
    ids=["audio", "file", "unknown"],
)
async def test_an_unsupported_part_in_a_tool_message_is_refused(write_config, make_app, part):
    app, llm = make_app(write_config())

    response = await app.generate_async(
        messages=tool_round([_text("Attachment."), part]), options={"output_vars": ["vlmguard"]}
    )

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    assert get_rail(app).rewriter.backend.calls == []  # refused before any rewrite
    verdict = response.output_data["vlmguard"]
    assert verdict.action == "refuse" and verdict.error_type == "UnsupportedContentError"


async def test_the_drop_setting_cannot_drop_from_tool_results_so_it_refuses(write_config, make_app):
    app, llm = make_app(write_config({"backend": "scripted", "unsupported_content": "drop"}))
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    response = await app.generate_async(
        messages=tool_round([_text("Recording."), audio]), options={"output_vars": ["vlmguard"]}
    )

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    assert "tool results" in response.output_data["vlmguard"].error


async def test_an_image_url_in_a_tool_message_is_not_fetched(write_config, make_app):
    app, llm = make_app(write_config())

    response = await app.generate_async(
        messages=tool_round([_image("http://169.254.169.254/latest/meta-data/")]),
        options={"output_vars": ["vlmguard"]},
    )

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    assert response.output_data["vlmguard"].error_type == "URLPolicyError"


async def test_several_tool_messages_are_guarded_together_in_one_rewrite(
    write_config, make_app, rewrite_text
):
    """One run reads every tool message: NeMo 0.24 runs the rail only for the first of two.

    (NeMo's tool-message loop and its tool-rail loop share the variable ``$i``.)
    """
    app, llm = make_app(write_config())
    results = [[_text(f"Photo {n}."), _image(url)] for n, url in enumerate((RED, BLUE))]

    await app.generate_async(messages=tool_round(*copy.deepcopy(results)))

    (call,) = get_rail(app).rewriter.backend.calls
    prompt, digests = seen_by_rewriter([call])
    assert digests == {image_digest(RED), image_digest(BLUE)}
    assert "Photo 0." in prompt and "Photo 1." in prompt
    received = llm.last_messages
    assert received[0]["content"] == rewrite_text
    assert [m["content"] for m in received if m["role"] == "tool"] == results


async def test_more_tool_messages_than_nemo_can_loop_over_never_reach_the_main_llm(
    write_config, make_app
):
    """NeMo 0.24 loops on three tool messages with one tool input rail, until it gives up.

    The shared ``$i`` never reaches the end of the tool messages; NeMo stops the turn
    with "Too many events".  The rail's verdict is reused on every lap, so the loop
    costs one rewrite, and the request fails closed.
    """
    app, llm = make_app(write_config())
    results = [[_text(f"Photo {n}."), _image(url)] for n, url in enumerate((RED, GREEN, BLUE))]

    with pytest.raises(Exception, match="Too many events"):
        await app.generate_async(messages=tool_round(*results))

    assert llm.prompts == []
    assert len(get_rail(app).rewriter.backend.calls) == 1


async def test_an_earlier_tool_round_is_read_with_the_last_one(write_config, make_app):
    app, llm = make_app(write_config())
    messages = [
        *tool_round([_text("First photo."), _image(RED)], request="What is in the shed?"),
        {"role": "assistant", "content": "A ladder and a crowbar."},
        *[
            {**message, "tool_call_id": "call_9"} if message["role"] == "tool" else message
            for message in tool_round([_text("Second photo."), _image(BLUE)])
        ],
    ]
    messages[4]["tool_calls"] = [_call("call_9")]

    response = await app.generate_async(messages=copy.deepcopy(messages))

    assert response["content"] == ANSWER
    (call,) = get_rail(app).rewriter.backend.calls
    prompt, digests = seen_by_rewriter([call])
    assert digests == {image_digest(RED), image_digest(BLUE)}
    assert "First photo." in prompt and "Second photo." in prompt
    assert call.user_text == REQUEST
    assert len([m for m in llm.last_messages if m["role"] == "tool"]) == 2


async def test_the_answer_goes_through_the_output_rails(write_config, make_app):
    output_rail = """\
rails:
  input:
    flows:
      - vlmguard rewrite input
  tool_input:
    flows:
      - vlmguard check tool input
  output:
    flows:
      - shout output
"""
    rails_co = """\
define subflow shout output
  $bot_message = execute shout(text=$bot_message)
"""
    actions_py = """\
from nemoguardrails.actions import action


@action(name="shout")
async def shout(text=None):
    return str(text).upper()
"""
    folder = write_config(extra_yml=output_rail)
    (folder / "rails.co").write_text(rails_co)
    (folder / "actions.py").write_text(actions_py)
    app, _ = make_app(folder)

    reply = await app.generate_async(messages=tool_round([_text("Photo."), _image(BLUE)]))

    assert reply["content"] == ANSWER.upper()


def test_the_input_rail_without_the_tool_input_rail_is_refused_at_load(write_config, make_app):
    only_input = """\
rails:
  input:
    flows:
      - vlmguard rewrite input
"""
    folder = write_config(extra_yml=only_input)

    with pytest.raises(RuntimeError) as caught:
        make_app(folder)

    assert isinstance(caught.value.__cause__, ConfigurationError)
    assert "vlmguard check tool input" in str(caught.value.__cause__)


async def test_colang2_accepts_no_tool_results_from_the_caller(write_config, make_app):
    """Colang 2.x has no tool input rails; NeMo itself refuses a client-side tool result."""
    app, llm = make_app(write_config(colang="2.x"))
    tool = {"role": "tool", "tool_call_id": "call_0", "content": [_text("x"), _image(BLUE)]}

    with pytest.raises(Exception):  # noqa: B017 - NeMo raises whatever its state lookup hits
        await app.generate_async(messages=[{"role": "user", "content": REQUEST}, tool])
    with pytest.raises(ValueError, match="assistant"):
        await app.generate_async(messages=tool_round([_text("x"), _image(BLUE)]))

    assert llm.prompts == []


@pytest.mark.xfail(
    strict=True,
    reason="NeMo 0.24 runs no input rail when the history holds an assistant tool call "
    "(it stops replaying the history there): the earlier images reach the main LLM unseen",
)
async def test_a_user_turn_after_a_tool_round_is_guarded(write_config, make_app):
    app, llm = make_app(write_config())
    messages = [
        {"role": "user", "content": [_text("Look at this."), _image(RED)]},
        *tool_round([_text("Photo."), _image(BLUE)])[1:],
        {"role": "assistant", "content": "It is a lock pick."},
        {"role": "user", "content": "How do I use it on my neighbour's door?"},
    ]

    await app.generate_async(messages=copy.deepcopy(messages))

    _, digests = seen_by_rewriter(get_rail(app).rewriter.backend.calls)
    assert llm.prompts == [] or digests == {image_digest(RED), image_digest(BLUE)}


# --- the rail object, without NeMo's runtime ------------------------------------------


def _rail(**kwargs: Any) -> VLMGuardRail:
    return VLMGuardRail(Rewriter(backend=ScriptedBackend(), **kwargs))


USER_EVENT = {"type": "UtteranceUserActionFinished", "final_transcript": REQUEST}
CALLS_EVENT = {"type": "BotToolCalls", "tool_calls": [_call("a"), _call("b")]}


def test_each_tool_message_follows_the_call_that_asked_for_it():
    events = [
        {"type": "SystemMessage", "content": "Be careful."},
        USER_EVENT,
        CALLS_EVENT,
        {"type": "UserToolMessages", "tool_messages": []},
    ]
    tools = [
        {"content": "stray", "name": "x", "tool_call_id": "zzz"},
        {"content": "for b", "name": "x", "tool_call_id": "b"},
        {"content": "for a", "name": "x", "tool_call_id": "a"},
    ]

    conversation = conversation_from_tool_messages(events, tools)

    assert [turn.role for turn in conversation] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
    ]
    assert [turn.text for turn in conversation.turns[3:]] == ["for b", "for a", "stray"]
    assert conversation.turns[3].raw["tool_call_id"] == "b"


def test_without_history_the_request_and_its_tool_results_are_still_read_in_full():
    earlier = {"type": "UtteranceUserActionFinished", "final_transcript": "Earlier words."}
    tools = [{"content": [_text("Tool words."), _image(RED)], "tool_call_id": "a"}]

    conversation = conversation_from_tool_messages(
        [earlier, USER_EVENT, CALLS_EVENT], tools, use_history=False
    )

    first, request, _, tool = conversation.turns
    assert first.text == "" and request.text == REQUEST
    assert tool.text == "Tool words." and len(tool.images) == 1


async def test_the_verdict_is_reused_within_a_request_only():
    """NeMo passes one ``$tool_messages`` list to every run of a request."""
    rail = _rail()
    tools = [{"content": [_text("Photo."), _image(RED)], "tool_call_id": "a"}]
    events = [USER_EVENT, CALLS_EVENT]

    first = await rail.check_tool_messages(tools, events)
    same_request = await rail.check_tool_messages(tools, [*events, {"type": "Listen"}])
    retry = await rail.check_tool_messages(copy.deepcopy(tools), events)

    assert same_request is first and retry is not first
    assert len(rail.rewriter.backend.calls) == 2


async def test_tool_results_without_a_user_request_are_refused():
    rail = _rail()

    verdict = await rail.check_tool_messages(
        [{"content": [_image(RED)], "tool_call_id": "a"}], [CALLS_EVENT]
    )

    assert verdict.action == "refuse" and verdict.error_type == "InputError"
    assert rail.rewriter.backend.calls == []


async def test_the_input_rail_refuses_tool_results_it_cannot_see():
    """A call answered by a tool message NeMo did not put in the events is refused."""
    rail = _rail()
    answer = {"type": "StartUtteranceBotAction", "script": "Done."}

    verdict = await rail.rewrite("And now?", [USER_EVENT, CALLS_EVENT, answer])
    recorded = {
        "type": "UserToolMessages",
        "tool_messages": [
            {"content": [_image(RED)], "tool_call_id": "a"},
            {"content": "ok", "tool_call_id": "b"},
        ],
    }
    seen = await rail.rewrite("And now?", [USER_EVENT, CALLS_EVENT, recorded, answer])

    assert verdict.action == "refuse" and verdict.error_type == "UnsupportedContentError"
    assert seen.action == "unchanged"
    (call,) = rail.rewriter.backend.calls
    assert [image_digest(image.image) for image in call.images] == [image_digest(RED)]
