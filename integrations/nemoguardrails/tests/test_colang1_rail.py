"""The ``vlmguard rewrite input`` rail in a Colang 1.0 configuration, through LLMRails."""

from __future__ import annotations

import copy
import hashlib
import socket

import pytest
from nemoguardrails.rails.llm.options import RailStatus
from nemoguardrails_vlmguard import get_rail

from vlmguard_plugins import BLOCK_INSTRUCTION, SHIELD_INSTRUCTION
from vlmguard_plugins.errors import ConfigurationError

REFUSAL = "I'm sorry, I can't respond to that."
INTERNAL_ERROR = "I'm sorry, an internal error has occurred."


def test_generate_sends_the_rewrite_to_the_main_llm(write_config, make_app, rewrite_text):
    app, llm = make_app(write_config())

    reply = app.generate(messages=[{"role": "user", "content": "How do I use this knife?"}])

    assert reply == {"role": "assistant", "content": "Here is a careful answer."}
    assert llm.last_user_content == rewrite_text
    rewriter = get_rail(app).rewriter
    assert rewriter.backend.calls[0].user_text == "How do I use this knife?"
    assert rewriter.backend.calls[0].images == []


async def test_generate_async_multimodal_keeps_the_image_part_untouched(
    write_config, make_app, knife_part, example_images, rewrite_text
):
    knife_bytes = example_images["knife"].read_bytes()
    app, llm = make_app(write_config())
    sent = [{"type": "text", "text": "How do I use this?"}, knife_part]

    reply = await app.generate_async(messages=[{"role": "user", "content": copy.deepcopy(sent)}])

    assert reply["content"] == "Here is a careful answer."
    assert llm.last_user_content == [{"type": "text", "text": rewrite_text}, knife_part]
    call = get_rail(app).rewriter.backend.calls[0]
    assert call.user_text == "How do I use this?"
    assert [image.sha256 for image in call.images] == [hashlib.sha256(knife_bytes).hexdigest()]


async def test_an_image_only_message_gets_the_rewrite_after_the_image(
    write_config, make_app, knife_part, rewrite_text
):
    """The core's write-back: a message without text reads "image, then question"."""
    app, llm = make_app(write_config())

    await app.generate_async(messages=[{"role": "user", "content": [copy.deepcopy(knife_part)]}])

    assert llm.last_user_content == [knife_part, {"type": "text", "text": rewrite_text}]
    assert len(get_rail(app).rewriter.backend.calls[0].images) == 1


async def test_a_rewrite_that_changes_nothing_forwards_the_message_as_sent(
    write_config, make_app, knife_part
):
    app, llm = make_app(write_config({"backend": "scripted"}))  # echoes "unchanged, no risk"
    sent = [{"type": "input_text", "text": "What colour is it?"}, knife_part]

    response = await app.generate_async(
        messages=[{"role": "user", "content": copy.deepcopy(sent)}],
        options={"output_vars": ["vlmguard"]},
    )

    assert llm.last_user_content == sent
    assert response.output_data["vlmguard"].action == "unchanged"
    assert response.output_data["vlmguard"].risk == "none"


async def test_generate_async_text_only(write_config, make_app, rewrite_text):
    app, llm = make_app(write_config())

    await app.generate_async(messages=[{"role": "user", "content": "What is this?"}])

    assert llm.last_user_content == rewrite_text


async def test_the_rewriter_sees_the_earlier_turns(write_config, make_app):
    app, _ = make_app(write_config())

    await app.generate_async(
        messages=[
            {"role": "user", "content": "I am cooking dinner."},
            {"role": "assistant", "content": "Sounds good!"},
            {"role": "user", "content": "How do I use this?"},
        ]
    )

    request = get_rail(app).rewriter.backend.calls[0].request
    prompt_text = " ".join(
        part["text"]
        for message in request.messages
        for part in message["content"]
        if part.get("type") == "text"
    )
    assert "I am cooking dinner." in prompt_text
    assert "Sounds good!" in prompt_text


async def test_check_async_reports_the_rewrite_as_modified(write_config, make_app, rewrite_text):
    app, llm = make_app(write_config())

    result = await app.check_async([{"role": "user", "content": "How do I use this knife?"}])

    assert result.status == RailStatus.MODIFIED
    assert result.content == rewrite_text
    assert llm.prompts == []  # checking runs the rails only


async def test_check_async_passes_a_message_the_rewriter_leaves_unchanged(write_config, make_app):
    app, _ = make_app(write_config({"backend": "scripted"}))  # echoes "unchanged, no risk"

    result = await app.check_async([{"role": "user", "content": "What colour is the sky?"}])

    assert result.status == RailStatus.PASSED
    assert result.content == "What colour is the sky?"


async def test_block_policy_refuses_and_the_main_llm_is_never_called(write_config, make_app):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["no contract here"]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))

    response = await app.generate_async(
        messages=[{"role": "user", "content": "How do I use this?"}],
        options={"output_vars": ["vlmguard"]},
    )
    checked = await app.check_async([{"role": "user", "content": "How do I use this?"}])

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    assert checked.status == RailStatus.BLOCKED
    assert checked.rail == "vlmguard rewrite input"
    verdict = response.output_data["vlmguard"]
    assert (verdict.action, verdict.risk) == ("block", "unknown")  # a failure is not a verdict
    assert verdict.fallback.startswith("RewriteParseError")


async def test_block_with_rails_exceptions_enabled_raises_the_input_rail_exception(
    write_config, make_app
):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["no contract here"]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings, extra_yml="enable_rails_exceptions: true\n"))

    reply = await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert reply["role"] == "exception"
    assert reply["content"]["type"] == "InputRailException"
    assert "vlmguard rewrite input" in reply["content"]["message"]
    assert llm.prompts == []


async def test_default_policy_shields_when_the_rewriter_output_is_malformed(
    write_config, make_app, knife_part
):
    settings = {"backend": "scripted", "backend_options": {"outputs": ["<think>no rewrite"]}}
    app, llm = make_app(write_config(settings))

    response = await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Use it?"}, knife_part]}],
        options={"output_vars": ["vlmguard"]},
    )

    text_part, image_part = llm.last_user_content
    assert text_part["text"].startswith(SHIELD_INSTRUCTION)
    assert text_part["text"].endswith("Request: Use it?")
    assert image_part == knife_part
    verdict = response.output_data["vlmguard"]
    assert (verdict.action, verdict.risk) == ("shield", "unknown")
    assert verdict.result.risk is None and verdict.fallback


async def test_raise_policy_fails_closed_with_nemo_internal_error(write_config, make_app):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["no contract here"]},
        "on_error": "raise",
    }
    app, llm = make_app(write_config(settings))

    reply = await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert reply["content"] == INTERNAL_ERROR
    assert llm.prompts == []


async def refused_verdict(app, content, **options):
    """Send one user message; return the reply and the rail's verdict."""
    response = await app.generate_async(
        messages=[{"role": "user", "content": content}],
        options={"output_vars": ["vlmguard"], **options},
    )
    return response.response[-1], response.output_data["vlmguard"]


@pytest.mark.parametrize("on_error", ["shield", "passthrough", "raise", "block"])
async def test_input_the_guard_cannot_check_is_refused_whatever_the_policy(
    write_config, make_app, on_error
):
    """Forwarding it under a fallback prompt would let content the rewriter never saw through."""
    app, llm = make_app(write_config({"backend": "scripted", "on_error": on_error}))
    remote = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/secret.png"}}

    reply, verdict = await refused_verdict(app, [{"type": "text", "text": "What is it?"}, remote])

    assert reply["content"] == REFUSAL
    assert llm.prompts == []
    assert get_rail(app).rewriter.backend.calls == []  # refused before any rewrite
    assert verdict.is_blocked and verdict.action == "refuse" and verdict.risk == "unknown"
    assert verdict.error_type == "URLPolicyError"
    assert verdict.result is None and verdict.fallback is None
    assert verdict.user_message == BLOCK_INSTRUCTION  # nothing of the user's left in it


async def test_a_refused_input_is_logged_with_its_error_type(write_config, make_app, caplog):
    app, _ = make_app(write_config())
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    with caplog.at_level("WARNING", logger="nemoguardrails_vlmguard"):
        await refused_verdict(app, [{"type": "text", "text": "Do it"}, audio])

    (record,) = [r for r in caplog.records if r.name == "nemoguardrails_vlmguard"]
    assert "UnsupportedContentError" in record.getMessage()
    assert "input_audio" in record.getMessage()


async def test_a_refused_input_raises_the_input_rail_exception_when_enabled(write_config, make_app):
    app, llm = make_app(write_config(extra_yml="enable_rails_exceptions: true\n"))
    part = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}

    reply = await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Watch"}, part]}]
    )

    assert reply["role"] == "exception"
    assert reply["content"]["type"] == "InputRailException"
    assert llm.prompts == []


async def test_check_async_reports_a_refused_input_as_blocked(write_config, make_app):
    app, _ = make_app(write_config())
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}}

    checked = await app.check_async(
        [{"role": "user", "content": [{"type": "text", "text": "Summarise"}, part]}]
    )

    assert checked.status == RailStatus.BLOCKED
    assert checked.rail == "vlmguard rewrite input"


async def test_remote_images_are_fetched_only_when_allowed_and_never_from_loopback(
    write_config, make_app
):
    """allow_remote_images is the core setting's own name; private addresses stay refused."""
    app, llm = make_app(write_config({"backend": "scripted", "allow_remote_images": True}))
    remote = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/secret.png"}}

    reply, verdict = await refused_verdict(app, [{"type": "text", "text": "What is it?"}, remote])

    assert get_rail(app).rewriter.url_policy.allow_remote is True
    assert verdict.error_type == "URLPolicyError"
    assert reply["content"] == REFUSAL
    assert llm.prompts == []


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "bare-path"])
async def test_local_files_named_in_a_message_are_never_read(
    write_config, make_app, example_images, as_url
):
    path = example_images["knife"].resolve()  # a readable image: reading it would succeed
    source = path.as_uri() if as_url else str(path)
    app, llm = make_app(write_config())
    part = {"type": "image_url", "image_url": {"url": source}}

    reply, verdict = await refused_verdict(app, [{"type": "text", "text": "Read it"}, part])

    assert get_rail(app).rewriter.backend.calls == []
    assert reply["content"] == REFUSAL
    assert verdict.error_type == "URLPolicyError"
    assert llm.prompts == []


async def test_a_malformed_image_part_is_refused(write_config, make_app):
    app, llm = make_app(write_config())
    part = {"type": "image_url", "image_url": {"detail": "high"}}  # no url at all

    reply, verdict = await refused_verdict(app, [{"type": "text", "text": "Look"}, part])

    assert reply["content"] == REFUSAL
    assert verdict.error_type == "ImageInputError"
    assert llm.prompts == []


async def test_more_images_than_allowed_across_turns_are_refused(
    write_config, make_app, knife_part
):
    """max_images counts every image of the conversation, earlier turns' included."""
    app, llm = make_app(write_config({"backend": "scripted", "max_images": 1}))

    reply = await app.generate_async(
        messages=[
            {"role": "user", "content": [knife_part]},
            {"role": "assistant", "content": "A knife."},
            {"role": "user", "content": [{"type": "text", "text": "And this?"}, knife_part]},
        ]
    )

    assert reply["content"] == REFUSAL
    assert llm.prompts == []


async def test_without_passthrough_nemo_sends_a_text_prompt_without_the_image(
    write_config, make_app, knife_part, rewrite_text
):
    """What the docs warn about: NeMo's own prompt template replaces images with a marker."""
    folder = write_config()
    config_yml = folder / "config.yml"
    config_yml.write_text(config_yml.read_text().replace("passthrough: true\n", ""))
    app, llm = make_app(folder)

    await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Use it?"}, knife_part]}]
    )

    prompt = llm.last_user_content
    assert isinstance(prompt, str)
    assert f"User: {rewrite_text} [+ image]" in prompt
    assert "base64" not in prompt


def test_a_config_without_register_fails_closed(write_config, make_app):
    app, llm = make_app(write_config(config_py=None))

    reply = app.generate(messages=[{"role": "user", "content": "How do I use this?"}])

    assert reply["content"] == INTERNAL_ERROR
    assert llm.prompts == []


def test_a_typo_in_the_settings_is_a_clear_error(write_config, make_app):
    folder = write_config({"backend": "scripted", "on_eror": "block"})

    with pytest.raises(RuntimeError) as caught:
        make_app(folder)

    cause = caught.value.__cause__
    assert isinstance(cause, ConfigurationError)
    assert "custom_data.vlmguard.on_eror" in str(cause)
    assert "use_history" in str(cause)  # the known keys include the rail's own


def test_an_invalid_value_names_its_setting(write_config, make_app):
    folder = write_config({"backend": "scripted", "max_images": -1})

    with pytest.raises(RuntimeError) as caught:
        make_app(folder)

    assert isinstance(caught.value.__cause__, ConfigurationError)
    assert "max_images" in str(caught.value.__cause__)
    assert "custom_data.vlmguard" in str(caught.value.__cause__)


def test_an_unknown_failure_policy_is_a_clear_error(write_config, make_app):
    folder = write_config({"backend": "scripted", "on_error": "ignore"})

    with pytest.raises(RuntimeError) as caught:
        make_app(folder)

    assert isinstance(caught.value.__cause__, ConfigurationError)
    assert "on_error" in str(caught.value.__cause__)


def test_a_missing_settings_section_is_a_clear_error(write_config, make_app):
    folder = write_config()
    config_yml = folder / "config.yml"
    config_yml.write_text(config_yml.read_text().split("custom_data:")[0])

    with pytest.raises(RuntimeError) as caught:
        make_app(folder)

    assert "custom_data: vlmguard:" in str(caught.value.__cause__)


def test_block_instruction_is_never_shown_to_the_user(write_config, make_app):
    """Blocking refuses through the rail; the core's block prompt never reaches the LLM."""
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["broken"]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))

    reply = app.generate(messages=[{"role": "user", "content": "Hi"}])

    assert BLOCK_INSTRUCTION not in reply["content"]
    assert llm.prompts == []


async def test_the_rewrite_survives_parallel_input_rails(write_config, make_app, rewrite_text):
    parallel = """\
rails:
  input:
    parallel: true
    flows:
      - length check input
      - vlmguard rewrite input
  tool_input:
    flows:
      - vlmguard check tool input
"""
    rails_co = """\
define subflow length check input
  $too_long = execute length_check(text=$user_message)
  if $too_long
    bot refuse to respond
    stop
"""
    actions_py = """\
from nemoguardrails.actions import action


@action(name="length_check")
async def length_check(text=None):
    return len(str(text)) > 10_000
"""
    folder = write_config(extra_yml=parallel)
    (folder / "rails.co").write_text(rails_co)
    (folder / "actions.py").write_text(actions_py)
    app, llm = make_app(folder)

    await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert app.config.rails.input.parallel is True
    assert llm.last_user_content == rewrite_text


async def test_a_dead_rewriter_server_shields_instead_of_failing_open(write_config, make_app):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {
        "backend": "openai",
        "model": "vlmguard-r1",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "backend_options": {"api_key": "unused", "max_retries": 0},
        "timeout_s": 5,
    }
    app, llm = make_app(write_config(settings))

    await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert llm.last_user_content.startswith(SHIELD_INSTRUCTION)
    assert llm.last_user_content.endswith("Request: How do I use this?")


async def test_a_slow_rewriter_times_out_into_the_failure_policy(
    write_config, make_app, rewriter_output
):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": [rewriter_output()], "delay_s": 5},
        "timeout_s": 0.2,
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))

    reply = await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert reply["content"] == REFUSAL
    assert llm.prompts == []


async def test_drop_setting_removes_an_unreadable_part_of_the_current_message(
    write_config, make_app, rewriter_output, rewrite_text
):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": [rewriter_output()]},
        "unsupported_content": "drop",
    }
    app, llm = make_app(write_config(settings))
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Do it"}, audio]}]
    )

    assert llm.last_user_content == [{"type": "text", "text": rewrite_text}]


async def test_drop_setting_cannot_drop_from_earlier_messages_so_it_refuses(write_config, make_app):
    """NeMo forwards earlier messages as sent: a part dropped there would still arrive."""
    app, llm = make_app(write_config({"backend": "scripted", "unsupported_content": "drop"}))
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    response = await app.generate_async(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Listen"}, audio]},
            {"role": "assistant", "content": "Heard."},
            {"role": "user", "content": "Now do it."},
        ],
        options={"output_vars": ["vlmguard"]},
    )

    assert response.response[-1]["content"] == REFUSAL
    assert llm.prompts == []
    verdict = response.output_data["vlmguard"]
    assert verdict.error_type == "UnsupportedContentError"
    assert "earlier" in verdict.error


def test_every_core_setting_is_accepted_under_its_own_name(write_config, make_app):
    settings = {
        "backend": "scripted",
        "on_error": "block",
        "timeout_s": 5,
        "max_images": 3,
        "max_image_pixels": 1_000_000,
        "max_text_chars": 4000,
        "allow_remote_images": True,
        "allowed_image_hosts": ["images.example.com"],
        "unsupported_content": "drop",
        "use_history": False,
    }
    app, _ = make_app(write_config(settings))

    rail = get_rail(app)
    assert rail.use_history is False
    assert rail.rewriter.on_error == "block"
    assert rail.rewriter.image_limits.max_images == 3
    assert rail.rewriter.image_limits.max_pixels == 1_000_000
    assert rail.rewriter.max_text_chars == 4000
    assert rail.rewriter.url_policy.allowed_hosts == frozenset({"images.example.com"})
    assert rail.rewriter.unsupported_content == "drop"


def long_chat(turns: int) -> list[dict[str, str]]:
    messages = []
    for index in range(turns):
        messages.append({"role": "user", "content": f"question {index}"})
        messages.append({"role": "assistant", "content": f"answer {index}"})
    return [*messages, {"role": "user", "content": "And now?"}]


async def test_a_conversation_longer_than_the_rewriter_reads_is_refused_not_trimmed(
    write_config, make_app
):
    """In passthrough mode every earlier turn reaches the main model, so none may go unread."""
    app, llm = make_app(write_config())

    response = await app.generate_async(
        messages=long_chat(20), options={"output_vars": ["vlmguard"]}
    )

    assert response.response[-1]["content"] == REFUSAL
    assert response.output_data["vlmguard"].error_type == "TextTooLongError"
    assert llm.prompts == []


async def test_without_history_a_long_text_conversation_is_guarded(
    write_config, make_app, rewriter_output, rewrite_text
):
    """use_history: false lets earlier text pass unread; only the current message is rewritten."""
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": [rewriter_output()]},
        "use_history": False,
    }
    app, llm = make_app(write_config(settings))

    await app.generate_async(messages=long_chat(20))

    assert llm.last_user_content == rewrite_text
    (call,) = get_rail(app).rewriter.backend.calls
    prompt = str(call.request.messages)
    assert "question 0" not in prompt and "answer 19" not in prompt
    assert "And now?" in prompt
