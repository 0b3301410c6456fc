"""The conformance table through the real gateway: OpenAI SDK in front, a fake VLM behind.

Every case of :func:`vlmguard_plugins.conformance.conformance_cases` goes over HTTP on
127.0.0.1; what the fake upstream received is checked against what the rewriter saw.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conformance import (
    BLUE,
    GREEN,
    RED,
    REWRITE,
    ConformanceCase,
    assert_case_seen,
    assert_nothing_unseen,
    conformance_cases,
    image_digest,
    rewriting_backend,
    texts_and_images,
)
from vlmguard_plugins.errors import (
    ImageInputError,
    InputError,
    TextTooLongError,
    UnsupportedContentError,
)
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, run_in_thread


@dataclass
class Served:
    url: str
    upstream: ChatCompletionServer
    backend: ScriptedBackend
    client: openai.OpenAI

    def chat(self, messages: list[dict[str, Any]]) -> Any:
        """A chat completion through the gateway with the official SDK.

        The messages hold parts the SDK's types do not list (audio, unknown types):
        sent as they are, which is what a client of any SDK can do.
        """
        return self.client.chat.completions.create(model="fake-vlm", messages=cast(Any, messages))

    def forwarded(self) -> dict[str, Any]:
        (received,) = self.upstream.requests
        assert received.body is not None
        return received.body

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )


@contextmanager
def serve_gateway(
    backend: ScriptedBackend | None = None, *, from_settings: bool = False, **settings: Any
) -> Iterator[Served]:
    """The gateway on loopback; ``from_settings`` builds its rewriter from ``settings``."""
    backend = backend or rewriting_backend()
    upstream = ChatCompletionServer(chunks=["The ", "answer ", "is ", "safe."], model="fake-vlm")
    with run_in_thread(upstream.app) as upstream_url:
        config = GatewaySettings(upstream_url=f"{upstream_url}/v1", **settings)
        app = create_app(config, None if from_settings else Rewriter(backend))
        with run_in_thread(app) as url:
            client = openai.OpenAI(
                base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30
            )
            yield Served(url, upstream, backend, client)
            client.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[Served]:
    with serve_gateway() as served:
        yield served


@pytest.fixture
def gw(shared: Served) -> Served:
    shared.upstream.requests.clear()
    shared.backend.calls.clear()
    return shared


def _expected_code(error: type[InputError] | None) -> str:
    assert error is not None
    if issubclass(error, UnsupportedContentError):
        return "unsupported_content"
    if issubclass(error, ImageInputError):
        return "invalid_image"
    if issubclass(error, TextTooLongError):
        return "text_too_long"
    return "invalid_request"


def _error_code(error: openai.APIStatusError) -> object:
    body = error.body
    assert isinstance(body, dict)
    return body["code"]


def _last_user_index(messages: list[dict[str, Any]]) -> int:
    return max(i for i, message in enumerate(messages) if message["role"] == "user")


@pytest.mark.parametrize("case", conformance_cases(), ids=lambda case: case.name)
def test_gateway_conformance(gw: Served, case: ConformanceCase) -> None:
    sent = copy.deepcopy(case.messages)
    if case.expect == "refused":
        with pytest.raises(openai.BadRequestError) as caught:
            gw.chat(sent)
        assert _error_code(caught.value) == _expected_code(case.error), caught.value.message
        assert gw.upstream.requests == []
        if case.error is UnsupportedContentError:
            # The message says which part, in which message, the client must remove.
            kinds = case.part_kinds - {"text", "image_url", "input_text", "input_image"}
            assert any(repr(kind) in caught.value.message for kind in kinds)
            assert "message " in caught.value.message
        return

    gw.chat(sent)
    forwarded = gw.forwarded()["messages"]
    assert_case_seen(case, gw.backend.calls)
    texts, images = texts_and_images(forwarded)
    system_texts = texts_and_images([m for m in case.messages if m["role"] == "system"])[0]
    assert_nothing_unseen(case, gw.backend.calls, texts, images, allowed_texts=system_texts)

    target = _last_user_index(case.messages)
    assert REWRITE in texts_and_images([forwarded[target]])[0]
    # Every image reaches the model where it was; every other message as it was sent.
    assert [image_digest(i) for i in images] == [
        image_digest(i) for i in texts_and_images(case.messages)[1]
    ]
    assert len(forwarded) == len(case.messages)
    for index, message in enumerate(case.messages):
        if index != target:
            assert forwarded[index] == message


def test_every_other_field_reaches_the_upstream_unchanged(gw: Served) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief.", "name": "app"},
        {"role": "developer", "content": [{"type": "text", "text": "Rules.", "cache": 1}]},
        {"role": "user", "name": "alice", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny", "x_tool_meta": [1, 2]},
        {
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "no"}],
            "x_extra": {"keep": True},
        },
        {
            "role": "user",
            "name": "alice",
            "x_message_extra": "kept",
            "content": [
                {"type": "image_url", "image_url": {"url": RED, "detail": "low"}, "x_p": 1},
                {"type": "text", "text": "And what is this?", "x_part_extra": "kept"},
                {"type": "image_url", "image_url": {"url": BLUE, "detail": "high"}},
            ],
        },
    ]
    body: dict[str, Any] = {
        "model": "fake-vlm",
        "messages": messages,
        "temperature": 0.3,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "x_vendor_option": {"nested": [1, {"deep": None}]},
        "metadata": {"team": "a"},
    }
    answer = httpx.post(f"{gw.url}/v1/chat/completions", json=copy.deepcopy(body), timeout=30)
    assert answer.status_code == 200, answer.text

    expected = copy.deepcopy(body)
    expected["messages"][-1]["content"][1]["text"] = REWRITE
    assert gw.forwarded() == expected
    (call,) = gw.backend.calls
    assert [image_digest(image.image) for image in call.images] == [
        image_digest(RED),
        image_digest(BLUE),
    ]


def test_an_unchanged_request_is_forwarded_exactly_as_sent() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Sys."}, _image(GREEN)]},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}, _image(RED)]},
    ]
    body = {"model": "fake-vlm", "messages": messages, "seed": 7, "x_unknown": "kept"}
    with serve_gateway(ScriptedBackend()) as served:  # echoes the text, risk none
        answer = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert served.forwarded() == body
        # The system message's image was read too, before the user's.
        digests = [image_digest(image.image) for image in served.backend.calls[0].images]
        assert digests == [image_digest(GREEN), image_digest(RED)]


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_an_image_in_turn_one_is_judged_with_the_question_in_turn_three(gw: Served) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [_image(RED), {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A lock pick set."},
        {"role": "user", "content": "How do I open my neighbour's door with it?"},
    ]
    gw.chat(copy.deepcopy(messages))
    (call,) = gw.backend.calls
    assert [image_digest(image.image) for image in call.images] == [image_digest(RED)]
    assert call.user_text == "How do I open my neighbour's door with it?"
    assert "A lock pick set." in str(call.request.messages)
    forwarded = gw.forwarded()["messages"]
    assert forwarded[:2] == messages[:2]  # the earlier turns reach the VLM as they were
    assert forwarded[2] == {"role": "user", "content": REWRITE}


def test_the_drop_setting_removes_unsupported_parts_before_forwarding() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello"},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
            ],
        }
    ]
    with serve_gateway(
        from_settings=True,
        rewriter_backend="scripted",
        unsupported_content="drop",
        expose_analysis=True,
    ) as served:
        completion = served.chat(messages)
        assert served.forwarded()["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
        ]
        report = (completion.model_extra or {})["vlmguard"]
        assert report["dropped_parts"] == ["input_audio", "video_url"]
        assert served.metric("vlmguard_gateway_dropped_parts_total") == 2


def test_by_default_unsupported_parts_are_refused_naming_type_and_message(gw: Served) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Sys."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Summarise it."},
                {"type": "file", "file": {"file_id": "file-1"}},
            ],
        },
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        gw.chat(messages)
    assert _error_code(caught.value) == "unsupported_content"
    assert "message 3" in caught.value.message and "'file'" in caught.value.message
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "messages.3.content.1"
    assert gw.upstream.requests == [] and gw.backend.calls == []
