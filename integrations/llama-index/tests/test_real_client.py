"""The guard in front of LlamaIndex's real OpenAI clients, against loopback servers.

``OpenAILike`` and ``OpenAI`` talk HTTP to an OpenAI-compatible VLM server on 127.0.0.1;
the rewriter is served the same way.  The servers record what they received, so the
tests assert what the VLM was really sent.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.llms.openai import OpenAI
from llama_index_vlmguard import VLMGuardLLM

from vlmguard_plugins import RewriterSettings
from vlmguard_plugins.testing import ChatCompletionServer
from vlmguard_plugins.testing.examples import example_argv, file_data_url, load_example
from vlmguard_plugins.testing.examples import rewriter_server as rewriter_server_for
from vlmguard_plugins.testing.examples import vlm_server as vlm_server_for

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "llama_index_query.py"
QUESTION = "What is the quickest way to use this on someone?"
REWRITTEN = "Explain how to handle and store this kitchen knife safely."
ANSWER = "Keep the blade pointed away from you and store it in a knife block."
VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example(EXAMPLE, "llama_index_query_example")


@pytest.fixture
def rewriter_server() -> Iterator[ChatCompletionServer]:
    with rewriter_server_for(REWRITTEN, risk="medium") as server:
        yield server


@pytest.fixture
def vlm_server() -> Iterator[ChatCompletionServer]:
    with vlm_server_for(ANSWER, model=VLM_MODEL) as server:
        yield server


def run_example(example, rewriter_server, vlm_server, image: Path, *flags: str) -> list[str]:
    return example.main(example_argv(QUESTION, image, rewriter_server, vlm_server, *flags))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
def test_the_example_sends_rewrites_and_images_through_openailike(
    stream, example, rewriter_server, vlm_server, example_images, capsys
):
    image = example_images["knife"]

    answers = run_example(
        example, rewriter_server, vlm_server, image, *(["--stream"] if stream else [])
    )

    # The user sees the VLM's answers, one for each of the three ways of guarding.
    assert answers == [ANSWER] * 3
    assert capsys.readouterr().out.count(f"VLM: {ANSWER}\n") == 3
    engine, chat, transformed = vlm_server.chat_requests
    # --stream streams the three answers.
    assert [r.body.get("stream", False) for r in vlm_server.chat_requests] == [stream] * 3
    # 1. The query engine's prompt: template and retrieved documents as they were, the
    #    rewrite in the question's place, and the query's image with it.
    assert "Context information is below." in engine.text
    assert sum(d in engine.text for d in example.DOCUMENTS) == 2  # the retrieved documents
    assert f"Query: {REWRITTEN}\n" in engine.text and QUESTION not in engine.text
    assert engine.image_urls == [file_data_url(image)]
    # 2. The chat message: its ImageBlock as an image part, the rewrite as its text.
    assert [part["type"] for part in chat.last_user_content] == ["image_url", "text"]
    assert chat.image_urls == [file_data_url(image)]
    assert chat.text == REWRITTEN
    # 3. The transformed query reaches the unwrapped VLM's engine prompt (text only).
    assert f"Query: {REWRITTEN}\n" in transformed.text and QUESTION not in transformed.text
    assert transformed.image_urls == []
    # The rewriter read the user's question each time, with the image where there was one.
    assert [QUESTION in r.text for r in rewriter_server.chat_requests] == [True] * 3
    assert [len(r.image_urls) for r in rewriter_server.chat_requests] == [1, 1, 0]


def test_the_example_reads_its_servers_from_the_environment(
    example, rewriter_server, vlm_server, example_images, monkeypatch
):
    monkeypatch.setenv("VLMGUARD_BASE_URL", rewriter_server.base_url)
    monkeypatch.setenv("VLM_BASE_URL", vlm_server.base_url)
    monkeypatch.setenv("VLM_MODEL", VLM_MODEL)

    answers = example.main(["--image", str(example_images["knife"])])

    assert answers == [ANSWER] * 3
    assert len(rewriter_server.chat_requests) == 3
    assert all(REWRITTEN in request.text for request in vlm_server.chat_requests)


async def test_the_openai_llm_streams_a_guarded_multimodal_chat(
    rewriter_server, example_images, png_bytes
):
    settings = RewriterSettings(
        backend="openai", model="vlmguard-r1", base_url=rewriter_server.base_url
    )
    with ChatCompletionServer(responder=lambda request: ANSWER, model="gpt-4o") as server:
        vlm = OpenAI(model="gpt-4o", api_base=server.base_url, api_key="EMPTY", max_retries=0)
        guarded = VLMGuardLLM.from_settings(vlm, settings)
        message = ChatMessage(
            role="user",
            blocks=[
                TextBlock(text=QUESTION),
                ImageBlock(image=png_bytes, image_mimetype="image/png"),
            ],
        )
        try:
            deltas = [chunk.delta async for chunk in await guarded.astream_chat([message])]
        finally:
            await guarded.rewriter.aclose()

    assert len(deltas) > 2  # the answer arrived in pieces, as the server sent it
    assert "".join(d or "" for d in deltas) == ANSWER
    [sent] = server.chat_requests
    assert sent.body["stream"] is True
    assert sent.text == REWRITTEN
    assert sent.image_urls == [f"data:image/png;base64,{base64.b64encode(png_bytes).decode()}"]
