"""The loopback chat-completions server, seen by the official openai client."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from vlmguard_plugins.backends import GenerationRequest
from vlmguard_plugins.testing import (
    ChatCompletionServer,
    MalformedJSON,
    RateLimited,
    ServerError,
    Unauthorized,
    dead_base_url,
)

ANSWER = "<think>fine</think><risk>none</risk><rewrite>Describe the picture.</rewrite> chatter"


def answer(request: GenerationRequest) -> str:
    return ANSWER


@pytest.fixture
def server() -> Iterator[ChatCompletionServer]:
    with ChatCompletionServer(responder=answer, model="m", stream_chunk_chars=5) as running:
        yield running


@pytest.fixture
def client(server: ChatCompletionServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


def png_data_url(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_answers_and_records_what_it_received() -> None:
    seen: list[GenerationRequest] = []

    def recording(request: GenerationRequest) -> str:
        seen.append(request)
        return ANSWER

    with ChatCompletionServer(responder=recording, model="m") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        completion = _ask_with_image(client, png_data_url((30, 20)))

    # Cut at the stop sequence, which is not included: what vLLM and OpenAI do.
    assert completion.choices[0].message.content == ANSWER.split("</rewrite>")[0]
    assert completion.choices[0].finish_reason == "stop"
    received = server.chat_requests[-1]
    assert received.text == "What is it?" and received.image_urls == [png_data_url((30, 20))]
    assert received.headers["authorization"] == "Bearer sk-test"
    # The backend got decoded, validated images and the generation settings.
    (request,) = seen
    assert [image.size for image in request.images] == [(30, 20)]
    assert request.max_new_tokens == 33 and request.stop == ["</rewrite>"]


def _ask_with_image(client: openai.OpenAI, image: str) -> Any:
    return client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "be careful"},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": "What is it?"},
                ],
            },
        ],
        stop=["</rewrite>"],
        max_tokens=33,
    )


def test_streams_server_sent_events(server: ChatCompletionServer, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert len(chunks) > 5  # really in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    # A streamed answer stays in flight until its last event is sent.
    assert server.max_in_flight == 1
    deadline = time.monotonic() + 5
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.in_flight == 0


def test_lists_its_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["m"]


def test_unknown_model_and_bad_images_get_openai_style_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="`other` does not exist"):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    not_an_image = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
    with pytest.raises(openai.BadRequestError, match="invalid image"):
        client.chat.completions.create(
            model="m",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": not_an_image}}],
                }
            ],
        )


def test_faults_apply_in_order_then_stop(
    server: ChatCompletionServer, client: openai.OpenAI
) -> None:
    server.inject(RateLimited(retry_after_s=2.5))
    server.inject(ServerError(502, "bad gateway"), times=2)
    server.inject(Unauthorized())
    messages = [{"role": "user", "content": "x"}]

    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "2.5"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError, match="bad gateway"):
            client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert client.chat.completions.create(model="m", messages=messages).choices  # type: ignore[arg-type]
    assert len(server.chat_requests) == 5


def test_malformed_json_is_not_json(server: ChatCompletionServer) -> None:
    server.inject(MalformedJSON())
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_api_key_is_enforced_when_set() -> None:
    with ChatCompletionServer(api_key="secret", model="m") as server:
        wrong = openai.OpenAI(base_url=server.base_url, api_key="guess", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = openai.OpenAI(base_url=server.base_url, api_key="secret", max_retries=0)
        assert [m.id for m in right.models.list()] == ["m"]


def test_restarts_on_the_same_port_and_a_dead_url_refuses() -> None:
    server = ChatCompletionServer(model="m").start()
    base_url = server.base_url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/models")
    server.start()
    try:
        assert server.base_url == base_url
        assert httpx.get(f"{base_url}/models").status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{dead_base_url()}/models")


def test_backend_and_responder_are_exclusive() -> None:
    from vlmguard_plugins.testing import ScriptedBackend

    with pytest.raises(ValueError, match="not both"):
        ChatCompletionServer(ScriptedBackend(), responder=answer)
