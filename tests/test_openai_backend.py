"""The OpenAI-compatible backend against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from vlmguard_plugins import Rewriter, Risk, available_backends, load_backend
from vlmguard_plugins.backends.openai import OpenAIBackend
from vlmguard_plugins.backends.transformers import TransformersBackend
from vlmguard_plugins.errors import (
    AuthenticationError,
    BackendTimeoutError,
    BackendUnavailableError,
    BadResponseError,
    ConfigurationError,
    ModelNotFoundError,
    RateLimitError,
)
from vlmguard_plugins.policy import BLOCK_INSTRUCTION, SHIELD_INSTRUCTION
from vlmguard_plugins.testing import (
    ChatCompletionServer,
    MalformedJSON,
    RateLimited,
    ScriptedBackend,
    ServerError,
    SlowAnswer,
    Unauthorized,
    dead_base_url,
)

MODEL = "vlmguard-r1"
SAFE_PROMPT = "Explain how to handle this knife safely, without harmful specifics."


def backend_for(*urls: str, **kwargs: object) -> OpenAIBackend:
    """A backend with fast retries, so fault tests take milliseconds."""
    settings: dict[str, object] = {"backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2}
    settings.update(kwargs)
    return load_backend("openai", model=MODEL, base_url=list(urls), **settings)  # type: ignore[return-value]


def decoded(data_url: str) -> Image.Image:
    header, _, payload = data_url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.fixture
def server() -> Iterator[ChatCompletionServer]:
    """A server whose model rewrites every request to SAFE_PROMPT."""
    with ChatCompletionServer(
        ScriptedBackend.rewriting_to(SAFE_PROMPT, risk="medium"), model=MODEL
    ) as running:
        yield running


# --- the happy path -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_server(tiny_model_dir: Path) -> Iterator[ChatCompletionServer]:
    backend = TransformersBackend(tiny_model_dir, max_wait_ms=20)
    with ChatCompletionServer(backend, model=MODEL) as running:
        yield running


async def test_tiny_model_served_over_http_with_an_image(
    tiny_model_server: ChatCompletionServer,
) -> None:
    backend = backend_for(tiny_model_server.base_url, image_max_side=112)
    rewriter = Rewriter(backend=backend, max_new_tokens=8)
    photo = Image.new("RGB", (448, 224), "orange")

    result = await rewriter.arewrite("What is this?", images=[photo])

    received = tiny_model_server.chat_requests[-1]
    assert "What is this?" in received.text
    assert [decoded(url).size for url in received.image_urls] == [(112, 56)]
    assert received.body is not None and received.body["max_tokens"] == 8
    # The model really ran on the server: its token counts came back over HTTP.
    assert result.usage.prompt_tokens > 50
    assert 0 < result.usage.completion_tokens <= 8
    # Random weights do not follow the contract, so the default policy shields.
    if result.fallback:
        assert result.action == "shield" and result.prompt.endswith("What is this?")
    await rewriter.aclose()


async def test_rewrite_arrives_with_analysis_risk_and_closing_tag(
    server: ChatCompletionServer,
) -> None:
    rewriter = Rewriter(backend=backend_for(server.base_url), on_error="raise")

    result = await rewriter.arewrite("How do I use this?", images=[Image.new("RGB", (64, 64))])

    assert result.prompt == SAFE_PROMPT
    assert result.risk is Risk.MEDIUM and result.action == "rewrite"
    assert "textual: scripted" in result.analysis
    # The server cut the text at the stop sequence, as vLLM does; the backend restores it.
    assert result.raw is not None and result.raw.rstrip().endswith("</rewrite>")
    await rewriter.aclose()


async def test_generation_settings_and_extra_body_reach_the_server(
    server: ChatCompletionServer,
) -> None:
    backend = backend_for(
        server.base_url, extra_body={"top_k": 20, "repetition_penalty": 1.05}, api_key="sk-test"
    )
    rewriter = Rewriter(backend=backend, max_new_tokens=77, temperature=0.3)

    await rewriter.arewrite("Hello there")

    received = server.chat_requests[-1]
    assert received.body is not None
    assert received.body["model"] == MODEL
    assert received.body["max_tokens"] == 77
    assert received.body["temperature"] == 0.3
    assert received.body["stop"] == ["</rewrite>"]
    assert received.body["top_k"] == 20 and received.body["repetition_penalty"] == 1.05
    assert received.headers["authorization"] == "Bearer sk-test"
    # A text-only message goes as a plain string: every server understands that.
    assert [m["role"] for m in received.messages] == ["system", "user"]
    assert isinstance(received.messages[0]["content"], str)
    await rewriter.aclose()


async def test_images_are_downscaled_or_sent_as_they_came(server: ChatCompletionServer) -> None:
    small_png = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(small_png, format="PNG")
    big = Image.new("RGB", (3000, 1500), "blue")
    rewriter = Rewriter(backend=backend_for(server.base_url, image_max_side=512))

    await rewriter.arewrite("Compare these", images=[small_png.getvalue(), big])

    small_url, big_url = server.chat_requests[-1].image_urls
    # The small PNG fits: its original bytes travel, not a re-encoding.
    assert small_url == "data:image/png;base64," + base64.b64encode(small_png.getvalue()).decode()
    assert decoded(big_url).size == (512, 256)

    jpeg_rewriter = Rewriter(backend=backend_for(server.base_url, image_format="jpeg"))
    await jpeg_rewriter.arewrite("And now?", images=[big])
    (jpeg_url,) = server.chat_requests[-1].image_urls
    assert jpeg_url.startswith("data:image/jpeg;base64,")
    assert decoded(jpeg_url).size == (1024, 512)  # the default longest side


def test_synchronous_rewrite_and_model_listing(server: ChatCompletionServer) -> None:
    backend = backend_for(server.base_url)
    with Rewriter(backend=backend) as rewriter:
        assert rewriter.rewrite("How do I use this?").prompt == SAFE_PROMPT
        assert rewriter.rewrite("And this?").prompt == SAFE_PROMPT

    async def list_models() -> list[str]:
        async with backend:
            return await backend.alist_models()

    assert asyncio.run(list_models()) == [MODEL]


# --- faults: retried, then the failure policy -----------------------------------------


async def test_rate_limit_waits_for_retry_after_then_succeeds(
    server: ChatCompletionServer,
) -> None:
    server.inject(RateLimited(retry_after_s=0.3), times=2)
    rewriter = Rewriter(backend=backend_for(server.base_url, backoff_s=0.001), on_error="raise")

    result = await rewriter.arewrite("How do I use this?")

    assert result.prompt == SAFE_PROMPT
    first, second, third = (r.received_at for r in server.chat_requests)
    # The backoff alone would wait ~1 ms: the gaps prove Retry-After was honoured.
    assert second - first >= 0.29 and third - second >= 0.29


async def test_rate_limit_that_persists_goes_to_the_policy(server: ChatCompletionServer) -> None:
    server.inject(RateLimited(retry_after_s=0), times=None)
    rewriter = Rewriter(backend=backend_for(server.base_url, max_retries=2))

    with pytest.raises(RateLimitError, match="429"):
        await rewriter.arewrite("How do I use this?", on_error="raise")
    assert len(server.chat_requests) == 3  # one try and two retries

    shielded = await rewriter.arewrite("How do I use this?")
    assert shielded.action == "shield" and "RateLimitError" in (shielded.fallback or "")
    assert SHIELD_INSTRUCTION in shielded.prompt and shielded.prompt.endswith("How do I use this?")


async def test_retry_after_longer_than_allowed_is_not_waited_for(
    server: ChatCompletionServer,
) -> None:
    server.inject(RateLimited(retry_after_s=120), times=None)
    rewriter = Rewriter(backend=backend_for(server.base_url, max_retry_after_s=5), on_error="raise")

    with pytest.raises(RateLimitError):
        await rewriter.arewrite("hi")
    assert len(server.chat_requests) == 1


async def test_server_error_is_retried(server: ChatCompletionServer) -> None:
    server.inject(ServerError(500), times=2)
    rewriter = Rewriter(backend=backend_for(server.base_url, max_retries=2), on_error="raise")

    assert (await rewriter.arewrite("hi")).prompt == SAFE_PROMPT
    assert len(server.chat_requests) == 3


async def test_server_error_that_persists_blocks_under_the_block_policy(
    server: ChatCompletionServer,
) -> None:
    server.inject(ServerError(503, "overloaded"), times=None)
    rewriter = Rewriter(backend=backend_for(server.base_url, max_retries=1), on_error="block")

    result = await rewriter.arewrite("hi")

    assert result.blocked and result.prompt == BLOCK_INSTRUCTION
    assert "BackendUnavailableError" in (result.fallback or "")
    assert len(server.chat_requests) == 2
    with pytest.raises(BackendUnavailableError, match="503: overloaded"):
        await rewriter.arewrite("hi", on_error="raise")


async def test_slow_answer_times_out_and_is_retried(server: ChatCompletionServer) -> None:
    server.inject(SlowAnswer(delay_s=5.0))
    # Generous for the fast retry on a busy machine, far below the slow answer.
    rewriter = Rewriter(backend=backend_for(server.base_url, timeout_s=1.0), on_error="raise")

    assert (await rewriter.arewrite("hi")).prompt == SAFE_PROMPT
    assert len(server.chat_requests) == 2


async def test_slow_answers_end_as_timeout_then_passthrough(server: ChatCompletionServer) -> None:
    server.inject(SlowAnswer(delay_s=3.0), times=None)
    rewriter = Rewriter(backend=backend_for(server.base_url, timeout_s=0.2, max_retries=1))

    with pytest.raises(BackendTimeoutError):
        await rewriter.arewrite("hi", on_error="raise")
    assert len(server.chat_requests) == 2
    result = await rewriter.arewrite("hi", on_error="passthrough")
    assert result.action == "passthrough" and result.prompt == "hi"


async def test_malformed_json_is_retried_then_a_bad_response(server: ChatCompletionServer) -> None:
    server.inject(MalformedJSON())
    rewriter = Rewriter(backend=backend_for(server.base_url, max_retries=1), on_error="raise")
    assert (await rewriter.arewrite("hi")).prompt == SAFE_PROMPT

    server.inject(MalformedJSON(), times=None)
    with pytest.raises(BadResponseError, match="malformed"):
        await rewriter.arewrite("hi")
    assert len(server.chat_requests) == 2 + 2


async def test_unauthorized_is_not_retried(server: ChatCompletionServer) -> None:
    server.inject(Unauthorized(), times=None)
    rewriter = Rewriter(backend=backend_for(server.base_url, api_key="wrong-key"))

    with pytest.raises(AuthenticationError, match="401") as caught:
        await rewriter.arewrite("hi", on_error="raise")
    assert "wrong-key" not in str(caught.value)
    assert len(server.chat_requests) == 1

    shielded = await rewriter.arewrite("hi")
    assert shielded.action == "shield" and "AuthenticationError" in (shielded.fallback or "")


async def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMGUARD_API_KEY", "sk-from-env")
    with ChatCompletionServer(model=MODEL, api_key="sk-from-env") as server:
        rewriter = Rewriter(backend=backend_for(server.base_url), on_error="raise")
        assert (await rewriter.arewrite("Hello")).prompt == "Hello"
        monkeypatch.setenv("VLMGUARD_API_KEY", "sk-stale")
        stale = Rewriter(backend=backend_for(server.base_url), on_error="raise")
        with pytest.raises(AuthenticationError):
            await stale.arewrite("Hello")


async def test_unknown_model_is_a_model_not_found_error(server: ChatCompletionServer) -> None:
    backend = load_backend("openai", model="no-such-model", base_url=server.base_url)
    rewriter = Rewriter(backend=backend, on_error="raise")

    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        await rewriter.arewrite("hi")
    assert len(server.chat_requests) == 1


# --- replicas ---------------------------------------------------------------------------


async def test_failover_when_one_base_url_is_dead(server: ChatCompletionServer) -> None:
    dead = dead_base_url()
    # No retries at all: reaching the live replica must not depend on them.
    rewriter = Rewriter(backend=backend_for(dead, server.base_url, max_retries=0), on_error="raise")

    results = await asyncio.gather(*(rewriter.arewrite(f"question {i}") for i in range(6)))

    assert [r.prompt for r in results] == [SAFE_PROMPT] * 6
    assert len(server.chat_requests) == 6


async def test_requests_are_spread_round_robin_and_survive_a_replica_going_down() -> None:
    with (
        ChatCompletionServer(model=MODEL) as first,
        ChatCompletionServer(model=MODEL) as second,
    ):
        backend = backend_for(
            first.base_url, second.base_url, max_retries=0, failover_cooldown_s=0.3
        )
        rewriter = Rewriter(backend=backend, on_error="raise")
        for i in range(8):
            await rewriter.arewrite(f"question {i}")
        assert len(first.chat_requests) == len(second.chat_requests) == 4

        second.stop()
        results = [await rewriter.arewrite(f"after {i}") for i in range(4)]
        assert [r.prompt for r in results] == [f"after {i}" for i in range(4)]
        assert len(first.chat_requests) == 8

        second.start()  # back on the same port: it gets traffic again after the cool-down
        await asyncio.sleep(0.35)
        await rewriter.arewrite("one")
        await rewriter.arewrite("two")
        assert len(second.chat_requests) > 4
        await rewriter.aclose()


async def test_every_replica_down_is_backend_unavailable() -> None:
    dead = [dead_base_url(), dead_base_url()]
    rewriter = Rewriter(backend=backend_for(*dead, max_retries=1))

    with pytest.raises(BackendUnavailableError) as caught:
        await rewriter.arewrite("hi", on_error="raise")
    assert all(url in str(caught.value) for url in dead)
    assert (await rewriter.arewrite("hi")).action == "shield"


# --- concurrency ------------------------------------------------------------------------


async def test_concurrency_limit_holds_at_the_server() -> None:
    with ChatCompletionServer(model=MODEL, delay_s=0.15) as server:
        backend = backend_for(server.base_url, max_concurrency=3)
        rewriter = Rewriter(backend=backend, max_concurrency=50, on_error="raise")

        results = await rewriter.arewrite_batch([f"question {i}" for i in range(12)])

        assert [r.prompt for r in results] == [f"question {i}" for i in range(12)]
        assert server.max_in_flight == 3
        assert server.in_flight == 0


# --- configuration ----------------------------------------------------------------------


def test_registered_by_name_and_configured_from_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "openai" in available_backends()
    backend = load_backend(
        "openai", model=MODEL, base_url=" http://a:8000/v1/ , http://b:8000/v1,http://a:8000/v1"
    )
    assert isinstance(backend, OpenAIBackend)
    assert backend.base_urls == ["http://a:8000/v1", "http://b:8000/v1"]

    monkeypatch.setenv("VLMGUARD_BASE_URL", "http://replica:9000/v1")
    assert load_backend("openai", model=MODEL).base_urls == ["http://replica:9000/v1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": ""}, "model="),
        ({"model": MODEL, "base_url": "ftp://x/v1"}, "http"),
        ({"model": MODEL, "base_url": []}, "at least one base_url"),
        ({"model": MODEL, "max_concurrency": 0}, "max_concurrency"),
        ({"model": MODEL, "image_format": "TIFF"}, "image_format"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_backend("openai", **kwargs)


def test_command_line_rewrite_against_two_replicas(
    server: ChatCompletionServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from vlmguard_plugins.cli import app

    monkeypatch.setenv("VLMGUARD_BASE_URL", f"{dead_base_url()},{server.base_url}")
    result = CliRunner().invoke(
        app, ["rewrite", "--backend", "openai", "--model", MODEL, "--json", "How do I use this?"]
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["prompt"] == SAFE_PROMPT
    assert "How do I use this?" in server.chat_requests[-1].text


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], seconds: float | None) -> None:
    from vlmguard_plugins.backends.openai import _retry_after_seconds

    assert _retry_after_seconds(headers) == seconds
