"""The gateway over HTTP on 127.0.0.1: the official OpenAI SDK in front, a fake VLM behind."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from vlmguard_plugins import BLOCK_INSTRUCTION, ImageLimits, Rewriter, Risk, shield_prompt
from vlmguard_plugins.errors import BackendError
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.testing import (
    BrokenStream,
    ChatCompletionServer,
    ErrorStatus,
    HeldStream,
    ScriptedBackend,
    run_in_thread,
)

CLIENT_KEY = "client-key-1"
UPSTREAM_KEY = "upstream-secret-key"
REWRITE = "Explain how to handle the object in this picture safely."
QUESTION = "How do I use this to hurt someone?"


def png_data_url(color: str = "orange", size: tuple[int, int] = (32, 24)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE = png_data_url()


def user_message(text: str = QUESTION, image: str | None = IMAGE) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}})
    return {"role": "user", "content": content}


def vlm(chunks: list[str] | None = None, **options: Any) -> ChatCompletionServer:
    """The VLM behind the gateway: answers ``chunks`` (by default "The answer is safe.")."""
    pieces = chunks or ["The ", "answer ", "is ", "safe."]
    return ChatCompletionServer(chunks=pieces, model="fake-vlm", **options)


@dataclass
class Harness:
    url: str
    upstream: ChatCompletionServer
    backend: ScriptedBackend
    # Typed loosely: the tests send plain message dicts, as clients of any SDK do.
    client: Any

    def post(self, content: Any, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", **kwargs.pop("headers", {})}
        return httpx.post(
            f"{self.url}/v1/chat/completions", content=content, headers=headers, **kwargs
        )

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


@contextmanager
def gateway(
    backend: ScriptedBackend | None = None,
    upstream: ChatCompletionServer | None = None,
    *,
    upstream_url: str | None = None,
    rewriter_options: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Harness]:
    upstream = upstream or vlm()
    backend = backend or ScriptedBackend.rewriting_to(REWRITE, risk="high")
    with run_in_thread(upstream.app) as fake_url:
        config = GatewaySettings(
            upstream_url=upstream_url or f"{fake_url}/v1",
            upstream_api_key=SecretStr(UPSTREAM_KEY),
            client_api_keys=[CLIENT_KEY, "client-key-2"],
            **settings,
        )
        with run_in_thread(
            create_app(config, Rewriter(backend, **(rewriter_options or {})))
        ) as url:
            client = openai.OpenAI(
                base_url=f"{url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30
            )
            yield Harness(url, upstream, backend, client)
            client.close()


# -- forwarding ------------------------------------------------------------------------


def test_non_streaming_sends_the_rewrite_and_the_same_image_upstream() -> None:
    with gateway() as gw:
        completion = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message()], temperature=0.2, max_tokens=64
        )
        assert completion.choices[0].message.content == "The answer is safe."
        # The analysis is not shown by default.
        assert "vlmguard" not in (completion.model_extra or {})

        (received,) = gw.upstream.requests
        assert received.last_user_content == [
            {"type": "text", "text": REWRITE},
            {"type": "image_url", "image_url": {"url": IMAGE}},
        ]
        # Other parameters pass unchanged; only the gateway's key goes upstream.
        assert received.body is not None
        assert received.body["temperature"] == 0.2 and received.body["max_tokens"] == 64
        assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        # The rewriter saw the user's own text and the decoded image.
        (call,) = gw.backend.calls
        assert call.user_text == QUESTION
        assert call.images[0].size == (32, 24)


def test_only_the_last_user_message_is_rewritten() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is in my kitchen drawer?"},
        {"role": "assistant", "content": "Knives and spoons."},
        {"role": "user", "content": QUESTION},
    ]
    with gateway() as gw:
        gw.client.chat.completions.create(model="fake-vlm", messages=messages)
        body = gw.upstream.requests[0].body
        assert body is not None
        forwarded = body["messages"]
        assert forwarded[:3] == messages[:3]
        assert forwarded[3] == {"role": "user", "content": REWRITE}
        # The earlier turns reached the rewriter as conversation history.
        rewriter_prompt = str(gw.backend.calls[0].request.messages)
        assert "Knives and spoons." in rewriter_prompt


def test_an_image_without_text_is_still_guarded() -> None:
    image_only = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}
    with gateway() as gw:
        gw.client.chat.completions.create(model="fake-vlm", messages=[image_only])
        assert gw.backend.calls[0].images[0].size == (32, 24)
        assert gw.upstream.requests[0].last_user_content == [
            {"type": "image_url", "image_url": {"url": IMAGE}},
            {"type": "text", "text": REWRITE},
        ]


def test_streaming_relays_every_chunk_in_order_as_it_arrives() -> None:
    pieces = [f"piece-{i} " for i in range(20)]
    upstream = vlm(pieces)
    upstream.inject(HeldStream(timeout_s=10))
    with gateway(upstream=upstream) as gw:
        stream = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message()], stream=True
        )
        received: list[str] = []
        finish_reasons = []
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    received.append(choice.delta.content)
                    # The upstream holds the rest back until the client has the first.
                    upstream.release.set()
                finish_reasons.append(choice.finish_reason)
        assert received == pieces
        assert finish_reasons[-1] == "stop"
        # Released by the client, not by the timeout: the first chunk was not buffered.
        assert upstream.released_in_time is True
        body = upstream.requests[0].body
        assert body is not None and body["stream"] is True
        assert upstream.requests[0].last_user_content[0]["text"] == REWRITE


def test_the_analysis_option_adds_the_guard_report() -> None:
    with gateway(expose_analysis=True) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="fake-vlm", messages=[user_message()]
        )
        assert raw.headers["x-vlmguard-risk"] == "high"
        assert raw.headers["x-vlmguard-action"] == "rewrite"
        report = raw.parse().model_extra["vlmguard"]
        assert report["risk"] == "high" and report["changed"] is True
        assert "textual: scripted" in report["analysis"]
        assert report["rewritten_prompt"] == REWRITE

        chunks = list(
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message()], stream=True
            )
        )
        assert chunks[0].model_extra["vlmguard"]["risk"] == "high"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "The answer is safe."


def test_models_are_proxied_and_health_is_open() -> None:
    with gateway() as gw:
        assert [model.id for model in gw.client.models.list()] == ["fake-vlm"]
        assert gw.upstream.requests[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        health = httpx.get(f"{gw.url}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        missing = httpx.get(f"{gw.url}/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"


def test_a_client_that_goes_away_mid_stream_frees_the_relay() -> None:
    upstream = vlm([f"piece-{i} " for i in range(200)], chunk_delay_s=0.02)
    with gateway(upstream=upstream) as gw:
        stream = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message()], stream=True
        )
        for number, _ in enumerate(stream):
            if number == 3:
                break
        stream.close()
        deadline = time.monotonic() + 10
        while gw.metric("vlmguard_gateway_requests_in_flight") > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.metric("vlmguard_gateway_requests_in_flight") == 1  # only this scrape
        # The upstream connection was closed too, so the VLM stops generating.
        while upstream.abandoned_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.abandoned_streams == 1


def test_past_the_concurrency_limit_requests_get_503_but_health_still_answers() -> None:
    upstream = vlm(["slow"], delay_s=1.0)
    with gateway(upstream=upstream, max_concurrent_requests=1) as gw:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                gw.client.chat.completions.create, model="fake-vlm", messages=[user_message()]
            )
            while not upstream.requests:  # the first request holds the only slot
                time.sleep(0.01)
            with pytest.raises(openai.APIStatusError) as caught:
                gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
            assert httpx.get(f"{gw.url}/healthz").status_code == 200
            assert first.result().choices[0].message.content == "slow"
        assert caught.value.status_code == 503
        assert caught.value.code == "overloaded"
        assert caught.value.response.headers["retry-after"] == "1"


# -- security ------------------------------------------------------------------------


def test_wrong_or_missing_client_key_is_401_and_nothing_is_forwarded() -> None:
    with gateway() as gw:
        wrong: Any = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="not-a-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert caught.value.status_code == 401
        assert caught.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()

        missing = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "m"})
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["type"] == "invalid_request_error"
        assert gw.upstream.requests == [] and gw.backend.calls == []

        # Every configured key is accepted.
        second: Any = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="client-key-2", max_retries=0)
        second.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert len(gw.upstream.requests) == 1


def test_cors_is_off_unless_configured() -> None:
    preflight = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with gateway() as gw:
        answer = httpx.options(f"{gw.url}/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    with gateway(cors_origins=["https://app.example"]) as gw:
        answer = httpx.options(f"{gw.url}/v1/chat/completions", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"


# -- bad input -------------------------------------------------------------------------


def test_bodies_that_are_not_json_or_not_a_chat_request_are_400() -> None:
    with gateway() as gw:
        not_json = gw.post(b"{not json", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"] == "invalid_json"

        wrong_schema = gw.post(b'{"model": "fake-vlm", "messages": [{"role": "robot"}]}')
        assert wrong_schema.status_code == 400
        error = wrong_schema.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "messages.0.role"

        with pytest.raises(openai.BadRequestError) as caught:
            gw.client.chat.completions.create(
                model="fake-vlm",
                messages=[{"role": "assistant", "content": "no user turn here"}],
            )
        assert "no user message" in caught.value.message
        assert gw.upstream.requests == [] and gw.backend.calls == []


def test_oversized_bodies_are_413_whether_declared_or_streamed() -> None:
    with gateway(max_body_bytes=4096) as gw:
        big_text = "x" * 10_000
        with pytest.raises(openai.APIStatusError) as caught:
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message(big_text, image=None)]
            )
        assert caught.value.status_code == 413
        assert caught.value.code == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"model": "fake-vlm", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        streamed = gw.post(chunked())
        assert streamed.status_code == 413
        assert streamed.json()["error"]["code"] == "request_too_large"
        assert gw.upstream.requests == []


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("http://169.254.169.254/latest/meta-data.png", "remote image fetching is disabled"),
        ("file:///etc/passwd", "file:// URLs are never fetched"),
        ("/etc/hostname", "local file paths are not accepted"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a readable"),
        (png_data_url(size=(20_000, 10)), "over the limit"),
    ],
    ids=["remote-url", "file-url", "local-path", "corrupt", "too-large"],
)
def test_images_the_guard_cannot_accept_are_400_and_not_forwarded(
    image: str, expected: str
) -> None:
    with gateway() as gw:
        with pytest.raises(openai.BadRequestError) as caught:
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message(image=image)]
            )
        assert caught.value.code == "invalid_image"
        assert expected in caught.value.message
        assert gw.upstream.requests == []


def test_too_many_images_and_too_much_text_are_400() -> None:
    # A rewriter given to create_app keeps its own limits.
    rewriter_options = {"image_limits": ImageLimits(max_images=1), "max_text_chars": 50}
    with gateway(rewriter_options=rewriter_options) as gw:
        message = user_message()
        message["content"].append({"type": "image_url", "image_url": {"url": IMAGE}})
        with pytest.raises(openai.BadRequestError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=[message])
        assert "at most 1 per request" in caught.value.message
        with pytest.raises(openai.BadRequestError) as caught:
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message("z" * 200, image=None)]
            )
        assert caught.value.code == "text_too_long"
        assert gw.upstream.requests == []


def test_a_conversation_longer_than_the_guard_reads_is_refused_not_trimmed() -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(41)
    ]
    with gateway() as gw:
        with pytest.raises(openai.BadRequestError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=turns)
        assert caught.value.code == "text_too_long"
        assert gw.upstream.requests == [] and gw.backend.calls == []
        # Within the limit, every earlier turn reaches the rewriter.
        gw.client.chat.completions.create(model="fake-vlm", messages=turns[-33:])
        prompt = str(gw.backend.calls[0].request.messages)
        assert all(f"turn {i}" in prompt for i in range(8, 40))


# -- upstream failures -------------------------------------------------------------------


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_a_dead_upstream_is_502_streaming_or_not() -> None:
    with gateway(upstream_url=_closed_port_url()) as gw:
        with pytest.raises(openai.InternalServerError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert caught.value.status_code == 502
        assert caught.value.type == "upstream_error"
        with pytest.raises(openai.InternalServerError) as caught:
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message()], stream=True
            )
        assert caught.value.status_code == 502
        with pytest.raises(openai.InternalServerError):
            gw.client.models.list()
        assert gw.metric("vlmguard_gateway_upstream_errors_total", kind="connect") == 3
        assert UPSTREAM_KEY not in caught.value.response.text


@pytest.mark.parametrize(
    ("fail_status", "client_status"),
    [(500, 502), (503, 502), (401, 502), (400, 400), (429, 429)],
)
def test_upstream_error_statuses(fail_status: int, client_status: int) -> None:
    upstream = vlm()
    upstream.inject(ErrorStatus(fail_status), times=None)
    with gateway(upstream=upstream) as gw:
        with pytest.raises(openai.APIStatusError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert caught.value.status_code == client_status
        assert "error" in caught.value.response.json()
        assert UPSTREAM_KEY not in caught.value.response.text
        kind = f"status_{fail_status}"
        assert gw.metric("vlmguard_gateway_upstream_errors_total", kind=kind) == 1


def test_a_slow_upstream_is_504() -> None:
    with gateway(upstream=vlm(delay_s=3), upstream_timeout_s=0.3) as gw:
        with pytest.raises(openai.APIStatusError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert caught.value.status_code == 504
        assert caught.value.code == "upstream_timeout"


def test_a_stream_the_upstream_breaks_off_ends_with_an_error_event() -> None:
    upstream = vlm(["a", "b", "c", "d"])
    upstream.inject(BrokenStream(after_chunks=2))
    with gateway(upstream=upstream) as gw:
        received: list[str] = []
        with pytest.raises(openai.APIError, match="broke off"):
            for chunk in gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message()], stream=True
            ):
                received.extend(c.delta.content for c in chunk.choices if c.delta.content)
        assert received == ["a", "b"]
        assert gw.metric("vlmguard_gateway_upstream_errors_total", kind="stream") == 1


# -- failure policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected_text"),
    [
        ("shield", shield_prompt(QUESTION)),
        ("block", BLOCK_INSTRUCTION),
        ("passthrough", QUESTION),
    ],
)
def test_a_failed_rewrite_follows_the_failure_policy(policy: str, expected_text: str) -> None:
    backend = ScriptedBackend([BackendError("rewriter down"), "no contract tags at all"])
    with gateway(backend, on_error=policy) as gw:
        for _ in range(2):  # a backend error, then unparsable output
            gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        for received in gw.upstream.requests:
            # The image part is untouched whatever the policy.
            assert received.last_user_content == [
                {"type": "text", "text": expected_text},
                {"type": "image_url", "image_url": {"url": IMAGE}},
            ]
        fallbacks = "vlmguard_gateway_fallbacks_total"
        assert gw.metric(fallbacks, policy=policy, reason="BackendError") == 1
        assert gw.metric(fallbacks, policy=policy, reason="RewriteParseError") == 1
        # A failure is not a verdict: its risk is counted as unknown.
        rewrites = "vlmguard_gateway_rewrites_total"
        assert gw.metric(rewrites, risk="unknown", action=policy) == 2


def test_the_analysis_of_a_failed_rewrite_says_the_risk_is_unknown() -> None:
    backend = ScriptedBackend([BackendError("rewriter down")])
    with gateway(backend, expose_analysis=True) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="fake-vlm", messages=[user_message()]
        )
        assert raw.headers["x-vlmguard-risk"] == "unknown"
        assert raw.headers["x-vlmguard-action"] == "shield"
        report = raw.parse().model_extra["vlmguard"]
        assert report["risk"] == "unknown"
        assert report["fallback"].startswith("BackendError")
        assert report["rewritten_prompt"] == shield_prompt(QUESTION)


def test_the_raise_policy_answers_503_and_forwards_nothing() -> None:
    backend = ScriptedBackend([BackendError("rewriter down")])
    with gateway(backend, on_error="raise") as gw:
        with pytest.raises(openai.APIStatusError) as caught:
            gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert caught.value.status_code == 503
        assert caught.value.code == "guard_unavailable"
        assert gw.upstream.requests == []


# -- metrics ---------------------------------------------------------------------------


def test_metrics_count_what_happened() -> None:
    backend = ScriptedBackend(
        responder=lambda request: (
            ScriptedBackend.echo_unchanged(request)
            if "weather" in str(request.messages)
            else format_output("textual: scripted", Risk.HIGH, REWRITE)
        )
    )
    with gateway(backend) as gw:
        gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        list(
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message("What is the weather?")], stream=True
            )
        )
        httpx.post(f"{gw.url}/v1/chat/completions", json={})  # no key: 401

        chat = "/v1/chat/completions"
        assert gw.metric("vlmguard_gateway_requests_total", endpoint=chat, status="200") == 2
        assert gw.metric("vlmguard_gateway_requests_total", endpoint=chat, status="401") == 1
        rewrites = "vlmguard_gateway_rewrites_total"
        assert gw.metric(rewrites, risk="high", action="rewrite") == 1
        assert gw.metric(rewrites, risk="none", action="unchanged") == 1
        assert gw.metric("vlmguard_gateway_rewrite_seconds_count") == 2
        assert gw.metric("vlmguard_gateway_upstream_seconds_count", stream="true") == 1
        assert gw.metric("vlmguard_gateway_upstream_seconds_count", stream="false") == 1
        assert gw.metric("vlmguard_gateway_requests_in_flight") == 1  # this scrape itself
        # The unchanged request reached the upstream exactly as sent.
        assert gw.upstream.requests[1].last_user_content[0]["text"] == "What is the weather?"
