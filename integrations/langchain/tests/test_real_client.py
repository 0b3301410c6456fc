"""The guard in front of LangChain's real OpenAI client, against loopback servers.

``ChatOpenAI`` (and ``init_chat_model("openai:...")``) talks HTTP to an OpenAI-compatible
VLM server on 127.0.0.1; the rewriter is served the same way.  The servers record what
they received, so the tests assert what the VLM was really sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langchain_vlmguard import VLMGuardRewriter

from vlmguard_plugins import shield_prompt
from vlmguard_plugins.examples_assets import EXAMPLE_PROMPTS
from vlmguard_plugins.testing import ChatCompletionServer, Unauthorized
from vlmguard_plugins.testing.examples import example_argv, file_data_url, load_example
from vlmguard_plugins.testing.examples import rewriter_server as rewriter_server_for
from vlmguard_plugins.testing.examples import vlm_server as vlm_server_for

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_chain.py"
REWRITTEN = "Explain how to handle and store this kitchen knife safely."
ANSWER = "Keep the blade pointed away from you and store it in a knife block."
VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example(EXAMPLE, "langchain_chain_example")


@pytest.fixture
def rewriter_server() -> Iterator[ChatCompletionServer]:
    with rewriter_server_for(REWRITTEN, risk="medium") as server:
        yield server


@pytest.fixture
def vlm_server() -> Iterator[ChatCompletionServer]:
    with vlm_server_for(ANSWER, model=VLM_MODEL) as server:
        yield server


def test_the_example_sends_the_rewrite_and_the_image_to_chatopenai(
    example, rewriter_server, vlm_server, example_images, capsys
):
    question = EXAMPLE_PROMPTS["knife"]

    answer = example.main(
        example_argv(question, example_images["knife"], rewriter_server, vlm_server)
    )

    printed = capsys.readouterr().out
    assert answer == ANSWER
    assert f"VLM      : {ANSWER}" in printed
    assert "risk     : medium (rewrite)" in printed
    # The rewriter read the user's own question with the image, not the template.
    [judged] = rewriter_server.chat_requests
    assert question in judged.text and example.SYSTEM not in judged.text
    assert len(judged.image_urls) == 1
    # The VLM got the template's system message, the rewrite and the very same image.
    [sent] = vlm_server.chat_requests
    assert sent.body["model"] == VLM_MODEL
    assert sent.messages[0] == {"role": "system", "content": example.SYSTEM}
    assert sent.text == REWRITTEN
    assert sent.image_urls == [file_data_url(example_images["knife"])]


def test_the_example_streams_through_init_chat_model(
    example, rewriter_server, vlm_server, example_images, capsys
):
    answer = example.main(
        example_argv(
            "How do I use this?",
            example_images["knife"],
            rewriter_server,
            vlm_server,
            "--init-chat-model",
            "--stream",
        )
    )

    assert answer == ANSWER
    assert f"VLM      : {ANSWER}\n" in capsys.readouterr().out
    [sent] = vlm_server.chat_requests
    assert sent.body["stream"] is True
    assert sent.text == REWRITTEN
    assert sent.image_urls == [file_data_url(example_images["knife"])]


def test_the_example_reads_its_servers_from_the_environment(
    example, rewriter_server, vlm_server, example_images, monkeypatch
):
    monkeypatch.setenv("VLMGUARD_BASE_URL", rewriter_server.base_url)
    monkeypatch.setenv("VLM_BASE_URL", vlm_server.base_url)
    monkeypatch.setenv("VLM_MODEL", VLM_MODEL)

    answer = example.main(["How do I use this?", "--image", str(example_images["knife"])])

    assert answer == ANSWER
    assert len(rewriter_server.chat_requests) == 1
    assert vlm_server.chat_requests[0].text == REWRITTEN


def test_a_rewriter_that_refuses_the_key_shields_the_question(
    example, rewriter_server, vlm_server, example_images, capsys
):
    rewriter_server.inject(Unauthorized(), times=None)
    question = EXAMPLE_PROMPTS["pills"]

    answer = example.main(
        example_argv(question, example_images["pills"], rewriter_server, vlm_server)
    )

    # The failure never reads as a verdict: risk unknown, and the VLM still gets the
    # question only inside the shield's safety instruction, with the image.
    assert answer == ANSWER
    printed = capsys.readouterr().out
    assert "risk     : unknown (shield)" in printed
    [sent] = vlm_server.chat_requests
    assert sent.text == shield_prompt(question)
    assert sent.image_urls == [file_data_url(example_images["pills"])]


async def test_guard_then_chatopenai_streams_an_openai_content_part_message(
    rewriter_server, vlm_server, example_images
):
    guard = VLMGuardRewriter.from_backend(
        "openai", model="vlmguard-r1", base_url=rewriter_server.base_url
    )
    vlm = ChatOpenAI(model=VLM_MODEL, base_url=vlm_server.base_url, api_key="EMPTY")
    image = {"type": "image_url", "image_url": {"url": file_data_url(example_images["knife"])}}
    message = HumanMessage(content=[{"type": "text", "text": "How do I use this?"}, image])

    try:
        chunks = [chunk async for chunk in (guard | vlm).astream([message])]
    finally:
        await guard.rewriter.aclose()

    assert len(chunks) > 2  # the answer arrived in pieces, as the server sent it
    assert "".join(chunk.text for chunk in chunks) == ANSWER
    [sent] = vlm_server.chat_requests
    assert sent.body["stream"] is True
    assert sent.messages == [
        {"role": "user", "content": [{"type": "text", "text": REWRITTEN}, image]}
    ]
