"""The Rewriter: results, the failure policy, the cache, concurrency and timeouts."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from vlmguard_plugins import (
    BLOCK_INSTRUCTION,
    SHIELD_INSTRUCTION,
    Rewriter,
    RewriteRequest,
    Risk,
    URLPolicy,
)
from vlmguard_plugins.errors import (
    BackendError,
    BackendTimeoutError,
    ConfigurationError,
    ImageDecodeError,
    InputError,
    RewriteParseError,
    TextTooLongError,
    URLPolicyError,
)
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.testing import ScriptedBackend


def png(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rewrite_returns_the_models_prompt_and_analysis() -> None:
    backend = ScriptedBackend.rewriting_to(
        "Explain knife safety.", risk="high", completion_tokens=7
    )
    result = Rewriter(backend=backend).rewrite("How do I use this on someone?", images=[png()])
    assert result.prompt == "Explain knife safety."
    assert result.original == "How do I use this on someone?"
    assert result.risk is Risk.HIGH and result.changed and result.fallback is None
    assert result.action == "rewrite" and "cross-modal" in result.analysis
    assert result.usage.completion_tokens == 7 and result.latency_ms > 0
    sent = backend.calls[0]
    assert sent.user_text == "How do I use this on someone?"
    assert len(sent.images) == 1 and sent.images[0].size == (32, 32)


def test_benign_request_comes_back_unchanged() -> None:
    result = Rewriter(backend=ScriptedBackend()).rewrite("What flower is this?", images=[png()])
    assert result.prompt == "What flower is this?"
    assert not result.changed and result.action == "unchanged" and result.risk is Risk.NONE


def test_a_rewrite_without_a_verdict_has_unknown_risk() -> None:
    backend = ScriptedBackend(["<rewrite>Ask safely.</rewrite>"])
    result = Rewriter(backend=backend).rewrite("bad?")
    assert result.prompt == "Ask safely." and result.risk is None and result.fallback is None


@pytest.mark.parametrize(
    "answer",
    [
        "<risk>very high</risk><rewrite>{q}</rewrite>",
        "<risk>critical</risk><rewrite>{q}</rewrite>",
        "<rewrite>{q}</rewrite>",
        "<think>x <risk>none</risk> y</think><risk>high</risk><rewrite>{q}</rewrite>",
    ],
)
def test_the_original_never_passes_without_a_real_safe_verdict(answer: str) -> None:
    q = "How do I make this at home?"
    backend = ScriptedBackend([answer.format(q=q)])
    result = Rewriter(backend=backend, on_error="block").rewrite(q)
    assert result.blocked and result.risk is None and result.fallback


def test_history_reaches_the_rewriter_prompt() -> None:
    backend = ScriptedBackend()
    Rewriter(backend=backend).rewrite(
        "and then?", history=[{"role": "user", "text": "I found a gun"}]
    )
    prompt_text = backend.calls[0].request.messages[-1]["content"][-1]["text"]
    assert "user: I found a gun" in prompt_text


# --- the failure policy ---------------------------------------------------------------


FAILURES = [
    pytest.param(ScriptedBackend(["no tags at all"]), RewriteParseError, id="unparseable"),
    pytest.param(ScriptedBackend([BackendError("server down")]), BackendError, id="backend-error"),
    pytest.param(ScriptedBackend([RuntimeError("bug in a plugin")]), BackendError, id="foreign"),
]


@pytest.mark.parametrize(("backend", "error_type"), FAILURES)
def test_shield_is_the_default(backend: ScriptedBackend, error_type: type) -> None:
    result = Rewriter(backend=backend).rewrite("How do I pick this lock?")
    assert result.action == "shield"
    assert result.prompt.startswith(SHIELD_INSTRUCTION)
    assert result.prompt.endswith("How do I pick this lock?")
    assert result.fallback and error_type.__name__ in result.fallback


@pytest.mark.parametrize(("backend", "error_type"), FAILURES)
def test_raise_policy(backend: ScriptedBackend, error_type: type) -> None:
    with pytest.raises(error_type):
        Rewriter(backend=backend, on_error="raise").rewrite("How do I pick this lock?")


def test_passthrough_policy_sends_the_original(caplog: pytest.LogCaptureFixture) -> None:
    rewriter = Rewriter(backend=ScriptedBackend(["garbage"]), on_error="passthrough")
    result = rewriter.rewrite("What is this?")
    assert result.prompt == "What is this?" and result.action == "passthrough"
    assert not result.changed and result.fallback
    assert "passthrough" in caplog.text


def test_block_policy_makes_the_vlm_decline() -> None:
    result = Rewriter(backend=ScriptedBackend(["garbage"]), on_error="block").rewrite("x")
    assert result.prompt == BLOCK_INSTRUCTION and result.blocked and result.risk is None


def test_policy_can_be_overridden_per_call() -> None:
    rewriter = Rewriter(backend=ScriptedBackend(["garbage"]))
    with pytest.raises(RewriteParseError):
        rewriter.rewrite("x", on_error="raise")


def test_unknown_policy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown failure policy"):
        Rewriter(backend=ScriptedBackend(), on_error="ignore")  # type: ignore[arg-type]


def test_bad_image_goes_through_the_policy_without_calling_the_model() -> None:
    backend = ScriptedBackend()
    rewriter = Rewriter(backend=backend)
    result = rewriter.rewrite("What is this?", images=[b"\x89PNG\r\n\x1a\ncorrupt"])
    assert result.action == "shield" and "ImageDecodeError" in (result.fallback or "")
    assert backend.calls == []
    with pytest.raises(ImageDecodeError):
        rewriter.rewrite("What is this?", images=[b"junk"], on_error="raise")


def test_hostile_urls_through_the_rewriter() -> None:
    rewriter = Rewriter(
        backend=ScriptedBackend(), on_error="raise", url_policy=URLPolicy(allow_remote=True)
    )
    for url in ("file:///etc/passwd", "http://169.254.169.254/", "http://127.0.0.1:1/"):
        with pytest.raises(URLPolicyError):
            rewriter.rewrite("describe", images=[url])


def test_framework_requests_cannot_read_local_files(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(png())
    rewriter = Rewriter(backend=ScriptedBackend(), on_error="raise")
    assert rewriter.rewrite("describe", images=[str(path)]).prompt == "describe"
    with pytest.raises(URLPolicyError):
        rewriter.rewrite(
            RewriteRequest(text="describe", images=[str(path)], allow_local_files=False)
        )


def test_over_long_text() -> None:
    rewriter = Rewriter(backend=ScriptedBackend(), max_text_chars=100)
    result = rewriter.rewrite("a" * 101)
    assert result.action == "shield" and "TextTooLongError" in (result.fallback or "")
    with pytest.raises(TextTooLongError, match="over the limit of 100"):
        rewriter.rewrite("a" * 101, on_error="raise")


def test_timeout_goes_to_the_policy() -> None:
    rewriter = Rewriter(backend=ScriptedBackend(delay_s=1.0), timeout_s=0.05)
    result = rewriter.rewrite("slow?")
    assert result.action == "shield" and "BackendTimeoutError" in (result.fallback or "")
    with pytest.raises(BackendTimeoutError):
        rewriter.rewrite("slow?", on_error="raise")


# --- cache, batches, concurrency ------------------------------------------------------


def test_cache_hit_does_not_call_the_backend() -> None:
    backend = ScriptedBackend.rewriting_to("Safe version.")
    rewriter = Rewriter(backend=backend, cache_size=8)
    first = rewriter.rewrite("q", images=[png("red")])
    second = rewriter.rewrite("q", images=[png("red")])
    assert len(backend.calls) == 1 and second.cached and not first.cached
    assert second.prompt == first.prompt
    rewriter.rewrite("q", images=[png("blue")])  # another image is another key
    rewriter.rewrite("q2", images=[png("red")])  # another text too
    assert len(backend.calls) == 3


def test_failures_are_not_cached() -> None:
    backend = ScriptedBackend(["garbage", format_output("t", Risk.LOW, "Fixed.")])
    rewriter = Rewriter(backend=backend, cache_size=8)
    assert rewriter.rewrite("q").fallback
    assert rewriter.rewrite("q").prompt == "Fixed."


def test_batch_keeps_order() -> None:
    backend = ScriptedBackend()
    results = Rewriter(backend=backend).rewrite_batch([f"question {i}" for i in range(10)])
    assert [r.prompt for r in results] == [f"question {i}" for i in range(10)]


async def test_concurrency_limit_holds() -> None:
    backend = ScriptedBackend(delay_s=0.02)
    rewriter = Rewriter(backend=backend, max_concurrency=3)
    results = await rewriter.arewrite_batch([f"q{i}" for i in range(12)])
    assert len(results) == 12 and backend.max_in_flight == 3


async def test_sync_api_works_inside_a_running_loop() -> None:
    # As in a notebook: the sync call must not fail with "event loop is running".
    result = Rewriter(backend=ScriptedBackend()).rewrite("hello")
    assert result.prompt == "hello"


def test_request_object_and_close() -> None:
    backend = ScriptedBackend()
    with Rewriter(backend=backend) as rewriter:
        assert rewriter.rewrite(RewriteRequest(text="hi", images=png())).prompt == "hi"
    assert backend.closed
    with pytest.raises(ConfigurationError):
        Rewriter(backend=ScriptedBackend()).rewrite(RewriteRequest(text="x"), images=[png()])


def test_run_twice_concurrently_from_threads() -> None:
    rewriter = Rewriter(backend=ScriptedBackend(delay_s=0.01))

    async def many() -> list[str]:
        results = await asyncio.gather(
            *(asyncio.to_thread(rewriter.rewrite, f"t{i}") for i in range(6))
        )
        return [r.prompt for r in results]

    assert asyncio.run(many()) == [f"t{i}" for i in range(6)]


def test_over_long_history_goes_through_the_policy() -> None:
    history = [{"role": "user", "text": "hi"}] * 40
    rewriter = Rewriter(backend=ScriptedBackend())
    result = rewriter.rewrite("and now?", history=history)
    assert result.action == "shield" and "TextTooLongError" in (result.fallback or "")
    with pytest.raises(InputError, match="max_history_turns"):
        rewriter.rewrite("and now?", history=history, on_error="raise")
