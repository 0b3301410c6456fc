"""The tiny random-weight Qwen2.5-VL runs behind the guard, through the transformers backend."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_vlmguard import VLMGuardRewriter, get_rewrite_result

from vlmguard_plugins import shield_prompt
from vlmguard_plugins.examples_assets import EXAMPLE_PROMPTS
from vlmguard_plugins.testing import ChatCompletionServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_chain.py"


def test_tiny_model_end_to_end_through_the_transformers_backend(tiny_model_dir, example_images):
    guard = VLMGuardRewriter.from_backend(
        "transformers", model=str(tiny_model_dir), max_new_tokens=8
    )
    b64 = base64.b64encode(example_images["knife"].read_bytes()).decode("ascii")
    image = {"type": "image", "base64": b64, "mime_type": "image/png"}
    question = EXAMPLE_PROMPTS["knife"]
    try:
        received = (guard | ParrotFakeChatModel()).invoke(
            [HumanMessage(content=[image, {"type": "text", "text": question}])]
        )
    finally:
        guard.rewriter.close()

    result = get_rewrite_result(received)
    # The model really ran on text and image...
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0
    # ...and its untrained output breaks the contract, so the default policy shields.
    assert result.fallback.startswith("RewriteParseError")
    assert received.content == [image, {"type": "text", "text": shield_prompt(question)}]


def test_the_langchain_example_runs(tiny_model_dir, example_images, capsys):
    spec = importlib.util.spec_from_file_location("langchain_chain_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    question = EXAMPLE_PROMPTS["pills"]
    vlm_server = ChatCompletionServer(responder=lambda request: "A VLM answer.", model="the-vlm")

    with vlm_server as vlm:
        answer = example.main(
            [
                question,
                "--image",
                str(example_images["pills"]),
                "--rewriter-model",
                str(tiny_model_dir),
                "--max-new-tokens",
                "8",
                "--vlm-base-url",
                vlm.base_url,
                "--vlm-model",
                "the-vlm",
            ]
        )

    printed = capsys.readouterr().out
    assert answer == "A VLM answer."
    assert "risk     : unknown (shield)" in printed
    assert "fallback : RewriteParseError" in printed
    assert printed.rstrip().endswith("VLM      : A VLM answer.")
    # The untrained model's output breaks the contract: the VLM got the shielded question.
    [sent] = vlm.chat_requests
    assert sent.text == shield_prompt(question)
    assert len(sent.image_urls) == 1
