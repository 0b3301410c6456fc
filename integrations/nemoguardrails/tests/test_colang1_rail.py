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

    reply = await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])
    checked = await app.check_async([{"role": "user", "content": "How do I use this?"}])

    assert reply["content"] == REFUSAL
    assert llm.prompts == []
    assert checked.status == RailStatus.BLOCKED
    assert checked.rail == "vlmguard rewrite input"


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

    await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Use it?"}, knife_part]}]
    )

    text_part, image_part = llm.last_user_content
    assert text_part["text"].startswith(SHIELD_INSTRUCTION)
    assert text_part["text"].endswith("Request: Use it?")
    assert image_part == knife_part


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


async def test_remote_image_urls_are_not_fetched_by_default(write_config, make_app):
    remote = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/secret.png"}}
    app, llm = make_app(write_config())

    await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is it?"}, remote]}]
    )

    assert get_rail(app).rewriter.backend.calls == []  # refused before any rewrite
    text_part, image_part = llm.last_user_content
    assert text_part["text"].startswith(SHIELD_INSTRUCTION)
    assert image_part == remote


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "bare-path"])
async def test_local_files_named_in_a_message_are_never_read(
    write_config, make_app, example_images, as_url, rewriter_output
):
    path = example_images["knife"].resolve()  # a readable image: reading it would succeed
    source = path.as_uri() if as_url else str(path)
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": [rewriter_output()]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))
    part = {"type": "image_url", "image_url": {"url": source}}

    reply = await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Read it"}, part]}]
    )

    assert get_rail(app).rewriter.backend.calls == []
    assert reply["content"] == REFUSAL
    assert llm.prompts == []


async def test_a_malformed_image_part_goes_to_the_failure_policy(
    write_config, make_app, rewriter_output
):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": [rewriter_output()]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings))
    part = {"type": "image_url", "image_url": {"detail": "high"}}  # no url at all

    reply = await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Look"}, part]}]
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
    assert "on_eror" in str(cause)


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


async def test_an_unchecked_content_part_never_passes_as_checked(write_config, make_app):
    """An audio part cannot be analysed: the default policy shields the text, keeps the rest."""
    app, llm = make_app(write_config())
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Do it"}, audio]}]
    )

    text_part, audio_part = llm.last_user_content
    assert text_part["text"].startswith(SHIELD_INSTRUCTION)
    assert text_part["text"].endswith("Request: Do it")
    assert audio_part == audio
    assert get_rail(app).rewriter.backend.calls == []
