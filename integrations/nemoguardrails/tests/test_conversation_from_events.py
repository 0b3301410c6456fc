"""NeMo's event stream and ``$user_message`` as the core conversation."""

from __future__ import annotations

from nemoguardrails_vlmguard import conversation_from_events

from vlmguard_plugins.conversation import ImagePart, OtherPart, TextPart
from vlmguard_plugins.conversation.openai_format import content_to_openai

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}


class InternalEvent:  # Colang 2.x mixes its own event objects into the stream
    name = "StartFlow"


EVENTS = [
    {"type": "SystemMessage", "content": [{"type": "text", "text": "Be kind."}, IMAGE]},
    {
        "type": "UtteranceUserActionFinished",
        "final_transcript": [IMAGE, {"type": "text", "text": "What?"}],
    },
    {"type": "UserMessage", "text": "ignored: the utterance above is the message"},
    InternalEvent(),
    {"type": "StartUtteranceBotAction", "script": "A knife."},
    {"type": "UtteranceBotActionFinished", "final_script": "A knife."},
    {"type": "UtteranceUserActionFinished", "final_transcript": "the current message, as sent"},
]


def test_the_earlier_turns_come_from_the_events_and_the_current_one_from_user_message():
    conversation = conversation_from_events(EVENTS, "the current message, after earlier rails")

    assert [turn.role for turn in conversation] == ["system", "user", "assistant", "user"]
    system, first, bot, current = conversation.turns
    assert [type(part) for part in system.parts] == [TextPart, ImagePart]
    assert [type(part) for part in first.parts] == [ImagePart, TextPart]
    assert first.images[0].source == "data:image/png;base64,AAAA"
    assert bot.text == "A knife."
    assert current.text == "the current message, after earlier rails"


def test_without_history_earlier_turns_keep_everything_but_their_text():
    audio = {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
    events = [
        *EVENTS[:2],
        {"type": "UtteranceUserActionFinished", "final_transcript": [audio]},
        *EVENTS[4:],
    ]

    conversation = conversation_from_events(events, "now", use_history=False)

    system, first, earlier_audio, bot, current = conversation.turns
    assert [type(part) for part in system.parts] == [ImagePart]
    assert [type(part) for part in first.parts] == [ImagePart]
    assert [type(part) for part in earlier_audio.parts] == [OtherPart]
    assert bot.parts == ()
    assert current.text == "now"


def test_a_multimodal_user_message_round_trips_unchanged():
    message = [{"type": "input_text", "text": "Hi"}, IMAGE]

    conversation = conversation_from_events([], message)

    assert len(conversation) == 1
    assert content_to_openai(conversation.turns[0]) == message


def test_a_message_of_another_type_becomes_a_part_the_core_refuses():
    (turn,) = conversation_from_events(None, {"role": "user"}).turns

    assert [type(part) for part in turn.parts] == [OtherPart]
