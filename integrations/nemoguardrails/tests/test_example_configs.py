"""The example configuration folders users copy, exercised as they ship."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from nemoguardrails_vlmguard import VLMGuardSettings, colang_path, get_rail

from vlmguard_plugins.backends.transformers import TransformersBackend

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "nemoguardrails"


def copy_with_rewriter(example: str, destination: Path, settings: dict) -> Path:
    """Copy an example folder, changing only where its rewriter runs."""
    folder = destination / example
    shutil.copytree(EXAMPLES / example, folder)
    config = yaml.safe_load((folder / "config.yml").read_text())
    config["custom_data"]["vlmguard"] = settings
    (folder / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_the_examples_configure_the_rail_as_documented():
    colang1 = yaml.safe_load((EXAMPLES / "config" / "config.yml").read_text())
    colang2 = yaml.safe_load((EXAMPLES / "config_colang2" / "config.yml").read_text())

    assert colang1["rails"]["input"]["flows"] == ["vlmguard rewrite input"]
    assert colang1["rails"]["tool_input"]["flows"] == ["vlmguard check tool input"]
    assert colang1["passthrough"] is True
    assert colang1["import_paths"] == ["nemoguardrails_vlmguard"]
    assert colang2["colang_version"] == "2.x"
    for config in (colang1, colang2):
        assert config["custom_data"]["vlmguard"]["backend"] == "openai"
        # Every key the examples show is a real setting, under its real name.
        settings = VLMGuardSettings.from_custom_data(config["custom_data"])
        assert settings.model == "vlmguard-r1"
    assert VLMGuardSettings.from_custom_data(colang1["custom_data"]).max_images == 8


@pytest.mark.parametrize("example", ["config", "config_colang2"])
async def test_example_guards_a_multimodal_message(
    example, tmp_path, make_app, knife_part, rewriter_output, rewrite_text
):
    settings = {"backend": "scripted", "backend_options": {"outputs": [rewriter_output()]}}
    app, llm = make_app(copy_with_rewriter(example, tmp_path, settings))

    reply = await app.generate_async(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "How do I use this?"}, knife_part],
            }
        ]
    )

    assert reply["content"] == "Here is a careful answer."
    assert llm.last_user_content == [{"type": "text", "text": rewrite_text}, knife_part]


async def test_the_colang1_example_guards_a_tool_result_with_an_image(
    tmp_path, make_app, knife_part, rewriter_output, rewrite_text
):
    settings = {"backend": "scripted", "backend_options": {"outputs": [rewriter_output()]}}
    app, llm = make_app(copy_with_rewriter("config", tmp_path, settings))
    call = {"id": "call_1", "type": "function", "function": {"name": "photo", "arguments": "{}"}}
    tool_content = [{"type": "text", "text": "The product photo."}, knife_part]

    reply = await app.generate_async(
        messages=[
            {"role": "user", "content": "Fetch the product photo and tell me how to use it."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": tool_content},
        ]
    )

    assert reply["content"] == "Here is a careful answer."
    (rewrite,) = get_rail(app).rewriter.backend.calls
    assert len(rewrite.images) == 1  # the tool's image
    assert [m["content"] for m in llm.last_messages] == [rewrite_text, None, tool_content]


async def test_example_end_to_end_with_the_tiny_model(
    tiny_model_dir, tmp_path, make_app, knife_part
):
    settings = {"backend": "transformers", "model": str(tiny_model_dir), "max_new_tokens": 24}
    app, llm = make_app(copy_with_rewriter("config", tmp_path, settings))

    response = await app.generate_async(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "How do I use this?"}, knife_part],
            }
        ],
        options={"output_vars": ["vlmguard"]},
    )

    verdict = response.output_data["vlmguard"]
    assert isinstance(get_rail(app).rewriter.backend, TransformersBackend)
    assert verdict.result.raw  # the tiny model really generated (random weights: noise)
    assert verdict.result.usage.completion_tokens > 0
    assert verdict.action in {"rewrite", "unchanged", "shield"}  # noise usually shields
    assert llm.last_user_content == [{"type": "text", "text": verdict.prompt}, knife_part]


def test_no_embedding_model_is_loaded(tmp_path, rewriter_output):
    """Input rails and custom actions only: fastembed must never be imported."""
    settings = {"backend": "scripted", "backend_options": {"outputs": [rewriter_output()]}}
    folders = [
        copy_with_rewriter(name, tmp_path, settings) for name in ("config", "config_colang2")
    ]
    script = textwrap.dedent(
        """
        import sys
        from nemoguardrails import LLMRails, RailsConfig
        from nemoguardrails.testing import FakeLLMModel

        for folder in sys.argv[1:]:
            app = LLMRails(RailsConfig.from_path(folder), llm=FakeLLMModel(responses=["ok"]))
            reply = app.generate(messages=[{"role": "user", "content": "How do I use this?"}])
            assert reply["content"] == "ok", reply
        print("fastembed imported:", "fastembed" in sys.modules)
        """
    )
    # A development install is found through COLANGPATH, as the docs describe.
    env = {**os.environ, "COLANGPATH": str(colang_path()), "HF_HUB_OFFLINE": "1"}

    completed = subprocess.run(
        [sys.executable, "-c", script, *map(str, folders)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "fastembed imported: False" in completed.stdout
