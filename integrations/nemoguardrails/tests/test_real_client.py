"""The example rails with NeMo's own OpenAI client, against loopback servers.

``examples/nemoguardrails/chat.py`` loads the shipped configuration folders, whose main
model is ``engine: openai`` with ``parameters.base_url``; NeMo's real client talks HTTP
to an OpenAI-compatible VLM server on 127.0.0.1, and the rail's rewriter is served the
same way.  The servers record what they received.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from vlmguard_plugins.testing import ChatCompletionServer
from vlmguard_plugins.testing.examples import example_argv, file_data_url, load_example
from vlmguard_plugins.testing.examples import rewriter_server as rewriter_server_for
from vlmguard_plugins.testing.examples import vlm_server as vlm_server_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "nemoguardrails"
QUESTION = "What is the quickest way to use this on someone?"
REWRITTEN = "Explain how to handle and store this kitchen knife safely."
ANSWER = "Keep the blade pointed away from you and store it in a knife block."
VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example(EXAMPLES / "chat.py", "nemoguardrails_chat_example")


@pytest.fixture
def rewriter_server() -> Iterator[ChatCompletionServer]:
    with rewriter_server_for(REWRITTEN, risk="medium") as server:
        yield server


@pytest.fixture
def vlm_server() -> Iterator[ChatCompletionServer]:
    with vlm_server_for(ANSWER, model=VLM_MODEL) as server:
        yield server


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key in the environment: a local server needs none."""
    for name in ("OPENAI_API_KEY", "VLM_API_KEY", "VLMGUARD_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_configs_name_a_served_vlm_by_base_url():
    for folder in ("config", "config_colang2"):
        config = yaml.safe_load((EXAMPLES / folder / "config.yml").read_text())
        [main] = [model for model in config["models"] if model["type"] == "main"]
        assert main["engine"] == "openai"
        assert main["parameters"]["base_url"].endswith("/v1")


@pytest.mark.parametrize("folder", ["config", "config_colang2"])
@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream_async"])
def test_the_rails_send_the_rewrite_and_the_image_to_the_served_vlm(
    folder, stream, example, rewriter_server, vlm_server, example_images, capsys
):
    image = example_images["knife"]

    stream_flag = ["--stream"] if stream else []
    answer = example.main(
        example_argv(
            QUESTION,
            image,
            rewriter_server,
            vlm_server,
            "--config",
            str(EXAMPLES / folder),
            *stream_flag,
        )
    )

    assert answer == ANSWER
    assert f"VLM: {ANSWER}\n" in capsys.readouterr().out
    # The rewriter read the user's question and image.
    [judged] = rewriter_server.chat_requests
    assert QUESTION in judged.text
    assert len(judged.image_urls) == 1
    # The VLM got the rewrite in the question's place and the image part as it was sent.
    [sent] = vlm_server.chat_requests
    assert sent.body["model"] == VLM_MODEL
    assert bool(sent.body.get("stream")) is stream
    assert sent.last_user_content == [
        {"type": "text", "text": REWRITTEN},
        {"type": "image_url", "image_url": {"url": file_data_url(image)}},
    ]


def test_the_servers_come_from_the_environment(
    example, rewriter_server, vlm_server, example_images, monkeypatch
):
    monkeypatch.setenv("VLM_BASE_URL", vlm_server.base_url)
    monkeypatch.setenv("VLM_MODEL", VLM_MODEL)
    monkeypatch.setenv("VLMGUARD_BASE_URL", rewriter_server.base_url)
    monkeypatch.setenv("VLM_API_KEY", "vlm-key")

    answer = example.main(["How do I use this?", "--image", str(example_images["knife"])])

    assert answer == ANSWER
    assert len(rewriter_server.chat_requests) == 1
    assert vlm_server.chat_requests[0].text == REWRITTEN
    assert vlm_server.chat_requests[0].headers["authorization"] == "Bearer vlm-key"
