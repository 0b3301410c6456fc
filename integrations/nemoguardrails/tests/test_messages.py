"""Reading NeMo's ``$user_message`` and writing the rewrite back into it."""

from __future__ import annotations

import pytest
from nemoguardrails_vlmguard.messages import (
    history_from_events,
    message_images,
    message_text,
    with_text,
)

from vlmguard_plugins.errors import InputError

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}


def test_text_parts_are_read_in_order_and_images_are_collected():
    message = [
        {"type": "text", "text": "First line."},
        IMAGE,
        {"type": "text", "text": "Second line."},
        {"type": "image_url", "image_url": "data:image/png;base64,BBBB"},
    ]

    assert message_text(message) == "First line.\nSecond line."
    assert message_images(message) == ["data:image/png;base64,AAAA", "data:image/png;base64,BBBB"]


def test_the_rewrite_replaces_every_text_part_and_keeps_other_parts_in_place():
    audio = {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}}
    message = [{"type": "text", "text": "a"}, IMAGE, {"type": "text", "text": "b"}, audio]

    assert with_text(message, "safe") == [{"type": "text", "text": "safe"}, IMAGE, audio]
    assert message[0] == {"type": "text", "text": "a"}  # the caller's message is not mutated


def test_an_image_only_message_gets_the_rewrite_as_a_leading_text_part():
    assert with_text([IMAGE], "Describe this image.") == [
        {"type": "text", "text": "Describe this image."},
        IMAGE,
    ]


def test_responses_api_parts_are_read_too():
    message = [
        {"type": "input_text", "text": "What is it?"},
        {"type": "input_image", "image_url": "data:image/png;base64,CCCC"},
    ]

    assert message_text(message) == "What is it?"
    assert message_images(message) == ["data:image/png;base64,CCCC"]
    assert with_text(message, "safe")[0] == {"type": "input_text", "text": "safe"}


def test_a_part_the_rewriter_cannot_see_is_an_input_error():
    audio = {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}}

    with pytest.raises(InputError, match="input_audio"):
        message_images([{"type": "text", "text": "Listen"}, audio])


def test_a_string_message_stays_a_string():
    assert message_text("hello") == "hello"
    assert message_images("hello") == []
    assert with_text("hello", "safe hello") == "safe hello"


@pytest.mark.parametrize("message", [42, {"role": "user"}, b"bytes"])
def test_a_message_of_another_type_is_an_input_error(message):
    with pytest.raises(InputError, match="string or a list of content parts"):
        message_text(message)


def test_history_skips_the_current_message_and_colang2_event_objects():
    class InternalEvent:  # Colang 2.x mixes its own event objects into the stream
        name = "StartFlow"

    events = [
        {"type": "UtteranceUserActionFinished", "final_transcript": "I am cooking."},
        InternalEvent(),
        {"type": "StartUtteranceBotAction", "script": "Nice!"},
        {
            "type": "UtteranceUserActionFinished",
            "final_transcript": [IMAGE, {"type": "text", "text": "Now?"}],
        },
    ]

    turns = history_from_events(events, max_turns=32)

    assert [(turn.role, turn.text) for turn in turns] == [
        ("user", "I am cooking."),
        ("assistant", "Nice!"),
    ]
    assert history_from_events(events, max_turns=1)[0].text == "Nice!"
