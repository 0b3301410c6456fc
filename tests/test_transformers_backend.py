"""The tiny random-weight Qwen2.5-VL, end to end through TransformersBackend and the Rewriter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from PIL import Image

from vlmguard_plugins import Rewriter, Risk, load_backend
from vlmguard_plugins.backends import GenerationRequest, truncate_after_stop
from vlmguard_plugins.backends.transformers import TransformersBackend
from vlmguard_plugins.errors import ModelNotFoundError
from vlmguard_plugins.prompts import build_messages


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    return load_backend("transformers", model=str(tiny_model_dir), max_wait_ms=50)  # type: ignore[return-value]


def test_loads_by_path_on_cpu(backend: TransformersBackend) -> None:
    assert backend.device == "cpu"
    assert backend.tokenizer.padding_side == "left"


def test_rewriter_end_to_end_with_an_image(backend: TransformersBackend) -> None:
    rewriter = Rewriter(backend=backend, max_new_tokens=12)
    result = rewriter.rewrite("What is this?", images=[Image.new("RGB", (96, 64), "red")])
    # Random weights do not follow the contract: the shield policy must have acted,
    # while the model really ran (tokens were counted).
    assert result.usage.prompt_tokens > 100
    assert 0 < result.usage.completion_tokens <= 12
    assert result.raw is not None
    if result.fallback:
        assert result.action == "shield" and result.prompt.endswith("What is this?")


async def test_concurrent_calls_are_batched(backend: TransformersBackend) -> None:
    rewriter = Rewriter(backend=backend, max_new_tokens=4)
    before = len(backend.batcher.batch_sizes)
    images = [Image.new("RGB", (56 + 8 * i, 56), "blue") for i in range(6)]
    results = await asyncio.gather(
        *(rewriter.arewrite(f"question {i}", images=[images[i]]) for i in range(6))
    )
    sizes = backend.batcher.batch_sizes[before:]
    assert sum(sizes) == 6 and max(sizes) > 1
    assert all(r.usage.completion_tokens > 0 for r in results)


def test_mixed_batch_with_and_without_images(backend: TransformersBackend) -> None:
    requests = [
        GenerationRequest(messages=build_messages("no image", []), max_new_tokens=3),
        GenerationRequest(
            messages=build_messages("one image", [_prepared((60, 40))]), max_new_tokens=3
        ),
    ]
    generations = backend.generate_batch(requests)
    assert len(generations) == 2
    assert generations[0].prompt_tokens < generations[1].prompt_tokens


def test_generation_stops_at_the_rewrite_closing_tag_or_the_marker(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}
    real_generate = backend.model.generate

    def recording_generate(**kwargs: object) -> object:
        seen.update(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(backend.model, "generate", recording_generate)
    backend.generate_batch([GenerationRequest(messages=build_messages("hi", []), max_new_tokens=2)])
    assert seen["stop_strings"] == ["</rewrite>", "<unchanged/>"]
    assert truncate_after_stop("<rewrite>x</rewrite> trailing chatter", ["</rewrite>"]) == (
        "<rewrite>x</rewrite>"
    )


def test_an_answer_ending_in_the_unchanged_marker_is_cut_there_and_forwards_the_text(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    answer = "<think>textual: fine</think><risk>none</risk><unchanged/> and then chatter"
    answer_ids = backend.tokenizer(answer, return_tensors="pt").input_ids

    def scripted_generate(**kwargs: torch.Tensor) -> torch.Tensor:
        prompt = kwargs["input_ids"]
        return torch.cat([prompt, answer_ids.repeat(prompt.shape[0], 1)], dim=1)

    monkeypatch.setattr(backend.model, "generate", scripted_generate)
    generation = backend.generate_batch(
        [GenerationRequest(messages=build_messages("hi", []), max_new_tokens=40)]
    )[0]
    assert generation.text == "<think>textual: fine</think><risk>none</risk><unchanged/>"
    result = Rewriter(backend=backend).rewrite("What flower is this?")
    assert (result.prompt, result.action, result.risk) == (
        "What flower is this?",
        "unchanged",
        Risk.NONE,
    )


async def test_a_lone_request_does_not_wait_for_the_batch_window(tiny_model_dir: Path) -> None:
    # With the window this long, a lone request that waited for companions would take 10 s.
    lone = TransformersBackend(tiny_model_dir, max_wait_ms=10_000)
    request = GenerationRequest(messages=build_messages("hi", []), max_new_tokens=2)
    generation = await asyncio.wait_for(lone.agenerate(request), 8)
    assert generation.completion_tokens > 0 and lone.batcher.batch_sizes == [1]


def test_missing_weights_name_the_model_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        TransformersBackend("vlmguard-test/does-not-exist", local_files_only=True)
    message = str(info.value)
    assert "vlmguard-test/does-not-exist" in message
    assert "model='/path/to/model'" in message
    with pytest.raises(ModelNotFoundError, match="could not load model from folder"):
        TransformersBackend(tmp_path)


def _prepared(size: tuple[int, int]):
    from vlmguard_plugins import load_image

    return load_image(Image.new("RGB", size, "green"))
