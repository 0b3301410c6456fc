"""The same rail in a Colang 2.x configuration."""

from __future__ import annotations

import copy

from nemoguardrails_vlmguard import get_rail

REFUSAL = "I'm sorry, I can't respond to that."


def test_generate_sends_the_rewrite_to_the_main_llm(write_config, make_app, rewrite_text):
    app, llm = make_app(write_config(colang="2.x"))

    reply = app.generate(messages=[{"role": "user", "content": "How do I use this knife?"}])

    assert reply["content"] == "Here is a careful answer."
    assert llm.last_user_content == rewrite_text
    assert get_rail(app).rewriter.backend.calls[0].user_text == "How do I use this knife?"


async def test_generate_async_multimodal_keeps_the_image_part_untouched(
    write_config, make_app, knife_part, rewrite_text
):
    app, llm = make_app(write_config(colang="2.x"))
    sent = [{"type": "text", "text": "How do I use this?"}, knife_part]

    reply = await app.generate_async(messages=[{"role": "user", "content": copy.deepcopy(sent)}])

    assert reply["content"] == "Here is a careful answer."
    assert llm.last_user_content == [{"type": "text", "text": rewrite_text}, knife_part]
    assert len(get_rail(app).rewriter.backend.calls[0].images) == 1


async def test_block_policy_refuses_and_the_main_llm_is_never_called(write_config, make_app):
    settings = {
        "backend": "scripted",
        "backend_options": {"outputs": ["no contract here"]},
        "on_error": "block",
    }
    app, llm = make_app(write_config(settings, colang="2.x"))

    reply = await app.generate_async(messages=[{"role": "user", "content": "How do I use this?"}])

    assert reply["content"] == REFUSAL
    assert llm.prompts == []


async def test_an_image_only_message_gets_the_rewrite_after_the_image(
    write_config, make_app, knife_part, rewrite_text
):
    app, llm = make_app(write_config(colang="2.x"))

    await app.generate_async(messages=[{"role": "user", "content": [copy.deepcopy(knife_part)]}])

    assert llm.last_user_content == [knife_part, {"type": "text", "text": rewrite_text}]


async def test_input_the_guard_cannot_check_is_refused(write_config, make_app):
    app, llm = make_app(write_config(colang="2.x"))
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}

    reply = await app.generate_async(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Do it"}, audio]}]
    )

    assert reply["content"] == REFUSAL
    assert llm.prompts == []
    assert get_rail(app).rewriter.backend.calls == []
