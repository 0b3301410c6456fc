"""Sampling settings (temperature, top_p, seed) reach the model through each backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlmguard_plugins.backends import GenerationRequest
from vlmguard_plugins.backends.openai import OpenAIBackend
from vlmguard_plugins.backends.transformers import TransformersBackend
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.testing import ChatCompletionServer

MODEL = "vlmguard-test"


def _request(
    text: str = "Describe a sunny day.",
    *,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": text}]}],
        max_new_tokens=12,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=[],
    )


# --- transformers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return TransformersBackend(tiny_model_dir, device="cpu")


def _text(backend: TransformersBackend, request: GenerationRequest) -> str:
    return backend.generate_batch([request])[0].text


async def test_seeded_requests_in_one_gather_answer_as_they_do_alone(
    backend: TransformersBackend,
) -> None:
    alone = {seed: _text(backend, _request(temperature=1.0, seed=seed)) for seed in (1, 2)}
    assert alone[1] != alone[2]  # another seed, another answer

    # Unseeded sampling requests run alongside and draw from the same random state.
    gathered = await asyncio.gather(
        backend.agenerate(_request(temperature=1.0)),
        backend.agenerate(_request(temperature=1.0, seed=1)),
        backend.agenerate(_request(temperature=1.0)),
        backend.agenerate(_request(temperature=1.0, seed=2)),
        backend.agenerate(_request(temperature=1.0, seed=1)),
    )

    seeded = [gathered[1], gathered[3], gathered[4]]
    assert [g.text for g in seeded] == [alone[1], alone[2], alone[1]]


async def test_a_tiny_top_p_keeps_only_the_likeliest_token(backend: TransformersBackend) -> None:
    greedy = _text(backend, _request())
    sampled = {_text(backend, _request(temperature=1.0, seed=seed)) for seed in (1, 2, 3)}
    assert sampled - {greedy}  # sampling at temperature 1 leaves greedy decoding
    nucleus = await asyncio.gather(
        *(backend.agenerate(_request(temperature=1.0, top_p=1e-6, seed=s)) for s in (1, 2, 3))
    )
    assert {g.text for g in nucleus} == {greedy}


@pytest.mark.parametrize("top_p", [0.0, 1.5, -0.1])
def test_a_top_p_outside_the_unit_interval_is_refused(top_p: float) -> None:
    with pytest.raises(ConfigurationError, match="top_p"):
        _request(temperature=1.0, top_p=top_p)


# --- OpenAI-compatible servers --------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ChatCompletionServer]:
    with ChatCompletionServer(responder=lambda request: "An answer.", model=MODEL) as running:
        yield running


async def test_the_server_receives_top_p_and_seed(server: ChatCompletionServer) -> None:
    async with OpenAIBackend(MODEL, base_url=server.base_url, max_retries=0) as backend:
        generation = await backend.agenerate(_request(temperature=0.7, top_p=0.9, seed=42))

    assert generation.text == "An answer."
    body = server.chat_requests[-1].body
    assert body is not None
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.7, 0.9, 42)


async def test_unset_sampling_settings_are_left_to_the_server(
    server: ChatCompletionServer,
) -> None:
    async with OpenAIBackend(MODEL, base_url=server.base_url, max_retries=0) as backend:
        await backend.agenerate(_request())

    body = server.chat_requests[-1].body
    assert body is not None
    assert body["temperature"] == 0.0
    assert "top_p" not in body and "seed" not in body
