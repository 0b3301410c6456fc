"""End to end on a real (tiny, random-weight) Qwen2.5-VL rewriter: the example and the wrapper."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index_vlmguard import VLMGuardLLM

from vlmguard_plugins import Rewriter, load_backend, shield_prompt
from vlmguard_plugins.testing import ChatCompletionServer

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = REPO_ROOT / "examples" / "llama_index_query.py"
QUESTION = "What is the quickest way to use this on someone?"


@pytest.fixture(scope="module")
def tiny_rewriter(tiny_model_dir):
    with Rewriter(load_backend("transformers", model=tiny_model_dir), max_new_tokens=24) as rw:
        yield rw


def test_the_example_runs_on_the_tiny_model(tiny_model_dir, example_images, capsys):
    spec = importlib.util.spec_from_file_location("llama_index_query_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vlm_server = ChatCompletionServer(responder=lambda request: "A VLM answer.", model="the-vlm")

    with vlm_server as vlm:
        answers = module.main(
            [
                "--rewriter-model",
                str(tiny_model_dir),
                "--max-new-tokens",
                "24",
                "--image",
                str(example_images["knife"]),
                "--vlm-base-url",
                vlm.base_url,
                "--vlm-model",
                "the-vlm",
                QUESTION,
            ]
        )

    out = capsys.readouterr().out
    assert answers == ["A VLM answer."] * 3
    assert out.count("risk: ") == 3  # one rewrite per part, reported by the event handler
    # Untrained weights do not follow the output contract: the failure policy (shield)
    # must have guarded every prompt, never passed the question through bare, and says
    # the risk is unknown rather than inventing one.
    assert out.count("fallback: RewriteParseError") == 3
    assert out.count("risk: unknown") == 3
    engine, chat, transformed = vlm.chat_requests
    assert all(shield_prompt(QUESTION) in r.text for r in (engine, chat, transformed))
    # The query engine's template and retrieved documents reached the VLM, with the image.
    assert "Context information is below." in engine.text and "Answer:" in engine.text
    assert [len(r.image_urls) for r in (engine, chat, transformed)] == [1, 1, 0]


def test_the_wrapped_llm_with_a_real_model_and_image(tiny_rewriter, vlm, events, example_images):
    image = ImageBlock(path=example_images["knife"])

    VLMGuardLLM(llm=vlm, rewriter=tiny_rewriter).chat(
        [ChatMessage(role="user", blocks=[image, TextBlock(text=QUESTION)])]
    )

    [message] = vlm.last_chat_messages
    assert message.blocks[0] is image
    # The random model's output cannot follow the contract, so the shield guards the text.
    assert message.blocks[1].text == shield_prompt(QUESTION)
    [rewrite] = events.rewrites
    assert rewrite.result.usage.completion_tokens > 0 and rewrite.result.raw  # it really generated
    assert rewrite.result.usage.prompt_tokens > 0


def test_the_distribution_declares_its_two_dependencies():
    from importlib.metadata import requires, version

    import llama_index_vlmguard
    from packaging.requirements import Requirement

    assert version("llama-index-vlmguard") == "0.1.0"
    names = {Requirement(r).name for r in requires("llama-index-vlmguard") or []}
    assert names >= {
        "vlmguard-plugins",
        "llama-index-core",
    }
    assert set(llama_index_vlmguard.__all__) >= {"VLMGuardQueryTransform", "VLMGuardLLM"}
