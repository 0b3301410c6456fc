"""The guard behaves like any Runnable: async, batch, stream, callbacks, config, tracing."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models import GenericFakeChatModel, ParrotFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_core.tracers.context import collect_runs
from langchain_vlmguard import REWRITE_EVENT, VLMGuardRewriter, get_rewrite_result

from vlmguard_plugins import Rewriter, RewriterSettings, Risk, URLPolicy
from vlmguard_plugins.backends.base import GenerationRequest
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "What is the quickest way to use this on someone?"


def echo_with_marker(request: GenerationRequest) -> str:
    """A rewriter model that prefixes 'safe: ' to the user's text."""
    backend_text = ScriptedBackend.echo_unchanged(request)
    return backend_text.replace("<rewrite>\n", "<rewrite>\nsafe: ").replace(
        "<risk>none</risk>", "<risk>low</risk>"
    )


async def test_ainvoke_runs_on_the_callers_event_loop(rewritten):
    loops: list[asyncio.AbstractEventLoop] = []

    def responder(request: GenerationRequest) -> str:
        loops.append(asyncio.get_running_loop())
        return str(ScriptedBackend.rewriting_to(rewritten).outputs[0])

    guard = VLMGuardRewriter(rewriter=Rewriter(backend=ScriptedBackend(responder=responder)))
    answer = await (guard | ParrotFakeChatModel()).ainvoke([HumanMessage(content=QUESTION)])

    assert answer.content == rewritten
    assert loops == [asyncio.get_running_loop()]  # the core's async path, no thread hop


@pytest.mark.parametrize("use_async", [False, True])
async def test_batch_honours_max_concurrency_and_keeps_order(use_async):
    backend = ScriptedBackend(responder=echo_with_marker, delay_s=0.05)
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend))
    inputs = [f"question {i}" for i in range(6)]
    config = {"max_concurrency": 2}

    outputs = await guard.abatch(inputs, config) if use_async else guard.batch(inputs, config)

    assert outputs == [f"safe: question {i}" for i in range(6)]
    assert backend.max_in_flight == 2
    assert len(backend.calls) == 6


async def test_abatch_without_a_limit_rewrites_concurrently():
    backend = ScriptedBackend(responder=echo_with_marker, delay_s=0.05)
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend))
    await guard.abatch([f"q{i}" for i in range(5)])
    assert backend.max_in_flight == 5


def test_batch_return_exceptions_keeps_the_good_results(guard, rewritten):
    outputs = guard.batch([QUESTION, 42], return_exceptions=True)
    assert outputs[0] == rewritten
    assert isinstance(outputs[1], ValueError)


def test_the_chain_still_streams_from_the_model(guard, backend):
    model = GenericFakeChatModel(messages=iter(["Here is how to store knives safely."]))
    chunks = list((guard | model).stream([HumanMessage(content=QUESTION)]))
    assert len(chunks) > 3
    assert "".join(chunk.content for chunk in chunks) == "Here is how to store knives safely."
    assert backend.calls[0].user_text == QUESTION


async def test_the_chain_still_streams_asynchronously(guard, backend):
    model = GenericFakeChatModel(messages=iter(["Keep them out of reach."]))
    chunks = [chunk async for chunk in (guard | model).astream(QUESTION)]
    assert "".join(chunk.content for chunk in chunks) == "Keep them out of reach."
    assert len(chunks) > 3
    assert len(backend.calls) == 1


def test_collect_runs_shows_the_guard_nested_in_the_chain(guard):
    chain = (guard | ParrotFakeChatModel()).with_config(run_name="guarded_vlm")
    with collect_runs() as collector:
        chain.invoke(QUESTION)
    (root,) = collector.traced_runs
    assert root.name == "guarded_vlm"
    assert [child.name for child in root.child_runs] == ["VLMGuardRewriter", "ParrotFakeChatModel"]
    guard_run = root.child_runs[0]
    assert guard_run.inputs == {"input": QUESTION}
    assert guard_run.error is None


def test_run_name_tags_and_metadata_reach_the_guards_run(guard):
    configured = guard.with_config(
        run_name="safety_rewrite", tags=["guard"], metadata={"tenant": "t1"}
    )
    with collect_runs() as collector:
        (configured | ParrotFakeChatModel()).invoke(QUESTION)
    guard_run = collector.traced_runs[0].child_runs[0]
    assert guard_run.name == "safety_rewrite"
    assert "guard" in guard_run.tags
    assert guard_run.metadata["tenant"] == "t1"


def test_a_raised_error_is_recorded_on_the_guards_run():
    from vlmguard_plugins.errors import BackendError

    backend = ScriptedBackend([BackendError("down")])
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), on_error="raise")
    with collect_runs() as collector, pytest.raises(BackendError):
        guard.invoke(QUESTION)
    assert "down" in collector.traced_runs[0].error


def test_the_callback_event_carries_analysis_and_risk_from_the_guards_run(guard, recorder):
    with collect_runs() as collector:
        (guard | ParrotFakeChatModel()).invoke(QUESTION, {"callbacks": [recorder]})
    ((name, data, run_id),) = recorder.events
    assert name == REWRITE_EVENT
    assert data["risk"] == "medium"
    assert data["original"] == QUESTION
    assert "visual: a kitchen knife" in data["analysis"]
    assert run_id == collector.traced_runs[0].child_runs[0].id


async def test_astream_events_reports_the_rewrite(guard, rewritten):
    chain = guard | ParrotFakeChatModel()
    events = [event async for event in chain.astream_events(QUESTION, version="v2")]
    custom = [event for event in events if event["event"] == "on_custom_event"]
    assert [event["name"] for event in custom] == [REWRITE_EVENT]
    assert custom[0]["data"]["prompt"] == rewritten
    assert custom[0]["data"]["risk"] == "medium"


async def test_ainvoke_puts_the_result_on_the_message(guard, rewritten):
    (message,) = await guard.ainvoke([("human", QUESTION)])
    assert message.content == rewritten
    assert get_rewrite_result(message).risk is Risk.MEDIUM


def test_from_backend_takes_the_settings_names_and_backend_options(rewritten):
    guard = VLMGuardRewriter.from_backend(
        "scripted",
        outputs=[ScriptedBackend.rewriting_to(rewritten).outputs[0]],  # a backend option
        cache_size=8,
        on_error="block",
        timeout_s=5,
        max_images=2,
        name="guard",
    )
    assert guard.rewriter.cache is not None
    assert guard.rewriter.on_error == "block"
    assert guard.rewriter.timeout_s == 5
    assert guard.rewriter.image_limits.max_images == 2
    assert guard.on_error is None  # the runnable keeps the rewriter's policy
    assert guard.get_name() == "guard"
    assert guard.invoke(QUESTION) == rewritten
    assert guard.invoke(QUESTION) == rewritten
    assert len(guard.rewriter.backend.calls) == 1  # the second came from the cache


def test_from_settings_builds_the_same_rewriter(rewritten):
    settings = RewriterSettings(
        backend="scripted",
        backend_options={"outputs": [ScriptedBackend.rewriting_to(rewritten).outputs[0]]},
        on_error="passthrough",
        max_text_chars=100,
    )
    guard = VLMGuardRewriter.from_settings(settings, input_key="question", result_key="guard")
    assert guard.rewriter.on_error == "passthrough"
    assert guard.rewriter.max_text_chars == 100
    output = guard.invoke({"question": QUESTION})
    assert output["question"] == rewritten
    assert output["guard"].prompt == rewritten
    from_mapping = VLMGuardRewriter.from_settings({"backend": "scripted", "cache_size": 4})
    assert from_mapping.rewriter.cache is not None


def test_invalid_settings_name_the_setting():
    with pytest.raises(ConfigurationError, match="on_error"):
        VLMGuardRewriter.from_backend("scripted", on_error="explode")
    with pytest.raises(ConfigurationError, match="max_image_pixel.*unknown setting"):
        VLMGuardRewriter.from_settings({"backend": "scripted", "max_image_pixel": 3})


def test_rewriter_options_still_work_but_are_deprecated(rewritten):
    with pytest.warns(DeprecationWarning, match="rewriter_options is deprecated"):
        guard = VLMGuardRewriter.from_backend(
            "scripted",
            outputs=[ScriptedBackend.rewriting_to(rewritten).outputs[0]],
            rewriter_options={"url_policy": URLPolicy(allow_remote=True), "cache_size": 2},
        )
    assert guard.rewriter.url_policy.allow_remote is True
    assert guard.rewriter.cache is not None
    assert guard.invoke(QUESTION) == rewritten
