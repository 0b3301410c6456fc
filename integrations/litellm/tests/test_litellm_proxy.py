"""The guardrail inside a real LiteLLM proxy (``litellm --config``), with the OpenAI SDK.

The proxy serves a stub VLM; the guardrail's rewriter is a second OpenAI-compatible
server on loopback.  Every test asserts what the VLM received (or that it received
nothing) and what the rewriter read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no inline types
from litellm_vlmguard.testing import LiteLLMProxy
from openai import OpenAI
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionUserMessageParam

from vlmguard_plugins import Risk
from vlmguard_plugins.testing import ChatCompletionServer, ServerError

pytestmark = pytest.mark.slow

MODEL = "qwen2.5-vl"
"""The VLM's name in examples/litellm/config.yaml."""

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "examples" / "litellm" / "config.yaml"
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


@pytest.fixture
def client(
    proxy: LiteLLMProxy,
    vlm_server: ChatCompletionServer,
    rewriter_server: ChatCompletionServer,
    rewriter_script: Any,
) -> OpenAI:
    vlm_server.reset()
    rewriter_server.reset()
    rewriter_script.reset()
    return OpenAI(base_url=proxy.base_url, api_key=proxy.master_key, max_retries=0, timeout=60)


def user(text: str, *images: str) -> ChatCompletionUserMessageParam:
    parts: list[ChatCompletionContentPartParam] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"role": "user", "content": parts}


def test_the_vlm_receives_the_rewrite_with_the_image_in_place(
    client: OpenAI,
    vlm_server: ChatCompletionServer,
    rewriter_script: Any,
    make_image: Callable[..., str],
    vlm_answer: str,
    rewritten: str,
) -> None:
    image = make_image()

    answer = client.chat.completions.create(
        model=MODEL, messages=[user("How do I use this?", image)]
    )

    assert answer.choices[0].message.content == vlm_answer
    (received,) = vlm_server.chat_requests
    assert received.text == rewritten
    assert received.image_urls == [image]
    assert [part["type"] for part in received.messages[0]["content"]] == ["text", "image_url"]
    (rewrite_call,) = rewriter_script.seen
    assert len(rewrite_call.images) == 1
    assert rewrite_call.images[0].size == (40, 30)


def test_the_rewriter_reads_the_api_key_from_the_environment(
    client: OpenAI, rewriter_server: ChatCompletionServer, make_image: Callable[..., str]
) -> None:
    client.chat.completions.create(model=MODEL, messages=[user("What is this?", make_image())])

    (call,) = rewriter_server.chat_requests
    assert call.headers["authorization"] == "Bearer rewriter-key"  # from the environment


def test_an_image_in_an_earlier_turn_reaches_the_rewriter(
    client: OpenAI,
    vlm_server: ChatCompletionServer,
    rewriter_script: Any,
    make_image: Callable[..., str],
    rewritten: str,
) -> None:
    earlier = make_image("red", (20, 20))
    messages = [
        user("What is in this picture?", earlier),
        {"role": "assistant", "content": "A kitchen knife on a table."},
        {"role": "user", "content": "How do I use it on someone?"},
    ]

    client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    (rewrite_call,) = rewriter_script.seen
    assert [image.size for image in rewrite_call.images] == [(20, 20)]
    assert rewrite_call.images[0].image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    (received,) = vlm_server.chat_requests
    assert received.image_urls == [earlier]
    assert received.messages[-1]["content"] == rewritten
    assert received.messages[0]["content"][0]["text"] == "What is in this picture?"


def test_streaming_answers_come_through_after_the_rewrite(
    client: OpenAI,
    vlm_server: ChatCompletionServer,
    make_image: Callable[..., str],
    vlm_answer: str,
    rewritten: str,
) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=[user("How do I use this?", make_image())], stream=True
    )

    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == vlm_answer
    (received,) = vlm_server.chat_requests
    assert received.body is not None and received.body["stream"] is True
    assert received.text == rewritten


def test_a_verdict_at_block_risk_is_refused_and_the_vlm_receives_nothing(
    client: OpenAI,
    vlm_server: ChatCompletionServer,
    rewriter_script: Any,
    make_image: Callable[..., str],
) -> None:
    rewriter_script.risk = Risk.HIGH

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[user("Hurt them", make_image())])

    assert "blocked this request (risk: high)" in refused.value.message
    body = refused.value.body
    assert isinstance(body, dict)
    fields = body["provider_specific_fields"]
    assert fields["code"] == "vlmguard_blocked"
    assert fields["vlmguard"] == {"risk": "high", "action": "rewrite", "changed": True}
    assert vlm_server.chat_requests == []


def test_a_blocked_stream_is_refused_before_any_chunk(
    client: OpenAI,
    vlm_server: ChatCompletionServer,
    rewriter_script: Any,
    make_image: Callable[..., str],
) -> None:
    rewriter_script.risk = Risk.HIGH

    with pytest.raises(openai.BadRequestError):
        stream = client.chat.completions.create(
            model=MODEL, messages=[user("Hurt them", make_image())], stream=True
        )
        list(stream)

    assert vlm_server.chat_requests == []


def test_a_rewriter_failure_under_block_is_refused_and_not_a_verdict(
    client: OpenAI, vlm_server: ChatCompletionServer, rewriter_server: ChatCompletionServer
) -> None:
    rewriter_server.inject(ServerError(503, "rewriter down"), times=None)  # retries too

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[user("What is this?")])

    assert "could not check this request" in refused.value.message
    assert "failure policy is 'block'" in refused.value.message
    assert vlm_server.chat_requests == []


def test_an_unsupported_part_is_refused_unseen_by_anyone(
    client: OpenAI, vlm_server: ChatCompletionServer, rewriter_server: ChatCompletionServer
) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "Listen"}, audio]}]

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]

    assert "'input_audio' part" in refused.value.message
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "messages.0.content.1"
    assert vlm_server.chat_requests == []
    assert rewriter_server.chat_requests == []


def test_a_corrupt_image_is_refused(client: OpenAI, vlm_server: ChatCompletionServer) -> None:
    corrupt = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[user("What is this?", corrupt)])

    body = refused.value.body
    assert isinstance(body, dict)
    assert body["provider_specific_fields"]["code"] == "invalid_image"
    assert vlm_server.chat_requests == []


@pytest.mark.parametrize(("option", "value"), [("block_risk", "none"), ("on_error", "ignore")])
def test_an_invalid_guardrail_option_stops_the_proxy(
    tmp_path: Path, vlm_server: ChatCompletionServer, option: str, value: str
) -> None:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["guardrails"][0]["litellm_params"][option] = value
    env = {
        "VLM_API_BASE": vlm_server.base_url,
        "VLMGUARD_REWRITER_BASE_URL": "http://127.0.0.1:9/v1",
        "VLMGUARD_REWRITER_API_KEY": "unused",
    }
    proxy = LiteLLMProxy(config, workdir=tmp_path, pythonpath=[PACKAGE_DIR], env=env)

    # Never a proxy that serves the model without its guardrail.
    with pytest.raises(RuntimeError, match="exited at startup") as error:
        proxy.start()
    assert "GuardrailStartupError" in str(error.value) and option in str(error.value)
