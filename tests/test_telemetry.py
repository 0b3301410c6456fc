"""OpenTelemetry spans: one per rewrite, GenAI conventions, privacy by default, nesting."""

from __future__ import annotations

import hashlib
import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from PIL import Image

from vlmguard_plugins import (
    Conversation,
    ImagePart,
    Rewriter,
    RewriterSettings,
    TextPart,
    Turn,
    load_backend,
)
from vlmguard_plugins.errors import BackendError, ImageInputError, InputError
from vlmguard_plugins.telemetry import CAPTURE_CONTENT_ENV, SPAN_NAME, Telemetry
from vlmguard_plugins.testing import ChatCompletionServer, ErrorStatus, ScriptedBackend

QUESTION = "How do I use this to hurt someone?"
REWRITE = "Explain how to handle the object in this picture safely."


def png(color: str, size: tuple[int, int] = (16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _content_capture_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default must hold whatever the developer's shell exports.
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # A provider of the test's own, passed explicitly: the global one is never set.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def traced(backend: Any, provider: TracerProvider, **options: Any) -> Rewriter:
    return Rewriter(backend, telemetry=Telemetry(tracer_provider=provider), **options)


def guard_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == SPAN_NAME]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_span_per_rewrite_with_the_genai_and_guard_attributes(provider, exporter):
    backend = ScriptedBackend.rewriting_to(
        REWRITE, risk="high", prompt_tokens=412, completion_tokens=57
    )
    images = [png("red"), png("blue")]

    result = await traced(backend, provider).arewrite(QUESTION, images=images)

    (span,) = exporter.get_finished_spans()
    assert span.name == "apply_guardrail vlmguard"
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    assert attributes(span) == {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.provider.name": "scripted",
        "gen_ai.guardrail.component.name": "vlmguard",
        "gen_ai.guardrail.result.type": "action",
        "gen_ai.guardrail.result.value": "rewrite",
        "gen_ai.usage.input_tokens": 412,
        "gen_ai.usage.output_tokens": 57,
        "vlmguard.on_error": "shield",
        "vlmguard.risk": "high",
        "vlmguard.action": "rewrite",
        "vlmguard.changed": True,
        "vlmguard.cached": False,
        "vlmguard.latency_ms": result.latency_ms,
        "vlmguard.image.count": 2,
        "vlmguard.image.sha256": tuple(hashlib.sha256(image).hexdigest() for image in images),
        "vlmguard.history.turns": 0,
    }


async def test_every_rewrite_of_a_batch_gets_its_own_span(provider, exporter):
    rewriter = traced(ScriptedBackend(), provider)

    await rewriter.arewrite_batch(["first question", "second question", "third question"])

    spans = guard_spans(exporter)
    assert len(spans) == 3
    assert {attributes(span)["vlmguard.action"] for span in spans} == {"unchanged"}
    assert {attributes(span)["vlmguard.risk"] for span in spans} == {"none"}


def _all_values(span: ReadableSpan) -> str:
    parts = [str(value) for value in attributes(span).values()]
    parts += [str(value) for event in span.events for value in (event.attributes or {}).values()]
    return "\n".join(parts)


async def test_no_text_and_no_image_bytes_on_the_span_by_default(provider, exporter):
    image = png("green")
    await traced(ScriptedBackend.rewriting_to(REWRITE), provider).arewrite(QUESTION, images=[image])

    (span,) = guard_spans(exporter)
    recorded = _all_values(span)
    assert QUESTION not in recorded
    assert REWRITE not in recorded
    assert "textual:" not in recorded  # nor the rewriter's analysis
    assert not any(isinstance(value, bytes) for value in attributes(span).values())
    assert not any(name.startswith("vlmguard.content.") for name in attributes(span))
    assert attributes(span)["vlmguard.image.sha256"] == (hashlib.sha256(image).hexdigest(),)


@pytest.mark.parametrize(
    ("flag", "env", "captured"),
    [
        (True, None, True),
        (None, "true", True),
        (None, "SPAN_ONLY", True),
        (None, "span_and_event", True),
        (None, "EVENT_ONLY", False),  # the convention's events are not spans
        (None, "false", False),
        (False, "true", False),  # the explicit flag wins over the environment
    ],
)
async def test_content_is_recorded_only_when_capture_is_switched_on(
    provider, exporter, monkeypatch, flag, env, captured
):
    if env is not None:
        monkeypatch.setenv(CAPTURE_CONTENT_ENV, env)
    telemetry = Telemetry(tracer_provider=provider, capture_message_content=flag)
    rewriter = Rewriter(ScriptedBackend.rewriting_to(REWRITE), telemetry=telemetry)

    result = await rewriter.arewrite(QUESTION)

    (span,) = guard_spans(exporter)
    content = {
        name: value for name, value in attributes(span).items() if name.startswith("vlmguard.")
    }
    if captured:
        assert content["vlmguard.content.original"] == QUESTION
        assert content["vlmguard.content.prompt"] == REWRITE
        assert content["vlmguard.content.analysis"] == result.analysis
    else:
        assert "vlmguard.content.original" not in content
        assert QUESTION not in _all_values(span)


async def test_the_content_setting_reaches_the_rewriter(provider, exporter):
    settings = RewriterSettings(backend="scripted", capture_message_content=True)
    options = settings.rewriter_options(tracer_provider=provider)
    rewriter = Rewriter(ScriptedBackend.rewriting_to(REWRITE), **options)

    await rewriter.arewrite(QUESTION)

    (span,) = guard_spans(exporter)
    assert attributes(span)["vlmguard.content.original"] == QUESTION


@pytest.mark.parametrize("policy", ["shield", "passthrough", "block"])
async def test_a_failure_policy_answer_is_an_error_span_that_names_the_policy(
    provider, exporter, policy
):
    backend = ScriptedBackend([ConnectionError("rewriter server down")])

    result = await traced(backend, provider, on_error=policy).arewrite(QUESTION)

    assert result.fallback is not None
    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert recorded["vlmguard.fallback"] == policy
    assert recorded["vlmguard.action"] == policy
    assert recorded["vlmguard.risk"] == "unknown"  # a failure is not a verdict
    assert recorded["error.type"] == "BackendError"
    assert span.status.status_code is StatusCode.ERROR
    # Without content capture the status names the error class and the policy only.
    assert span.status.description == f"BackendError (failure policy: {policy})"


def _everything(span: ReadableSpan) -> str:
    """Every attribute, the status and every event of ``span``, as one text."""
    return f"{_all_values(span)}\n{span.status.description}\n{[e.name for e in span.events]}"


SECRET_TEXT = "SECRETUSERTEXT"
SECRET_TOKEN = "SECRETTOKEN"
SECRET_PATH = "SECRETPATH"


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize("policy", ["shield", "raise"])
def test_an_error_body_that_quotes_the_request_is_on_the_span_only_with_capture(
    provider, exporter, capture, policy
):
    server = ChatCompletionServer(model="vlmguard-r1")
    server.inject(ErrorStatus(400, f"invalid request: input '{SECRET_TEXT}' rejected"), times=None)
    with server:
        backend = load_backend("openai", model="vlmguard-r1", base_url=server.base_url)
        telemetry = Telemetry(tracer_provider=provider, capture_message_content=capture)
        with Rewriter(backend, on_error=policy, telemetry=telemetry) as rewriter:
            try:
                rewriter.rewrite("What is this?", images=[png("red")])
            except BackendError:
                assert policy == "raise"

    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "BackendError"
    if capture:
        assert SECRET_TEXT in (span.status.description or "")
    else:
        assert SECRET_TEXT not in _everything(span)
    if policy == "raise":
        (event,) = span.events
        assert event.name == "exception"
        assert str((event.attributes or {})["exception.type"]).endswith(".BackendError")
        assert (SECRET_TEXT in str(dict(event.attributes or {}))) is capture


@pytest.mark.parametrize("capture", [False, True])
@pytest.mark.parametrize(
    ("url", "secret"),
    [
        (f"https://images.example/cat.png?tok={SECRET_TOKEN}", SECRET_TOKEN),
        (f"file:///etc/{SECRET_PATH}", SECRET_PATH),
    ],
)
async def test_a_refused_image_url_is_on_the_span_only_with_capture(
    provider, exporter, capture, url, secret
):
    telemetry = Telemetry(tracer_provider=provider, capture_message_content=capture)
    rewriter = Rewriter(ScriptedBackend(), telemetry=telemetry)
    conversation = Conversation((Turn("user", (TextPart(QUESTION), ImagePart(url))),))

    with pytest.raises(ImageInputError, match=secret):  # the caller is told which image
        await rewriter.aguard(conversation)

    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "URLPolicyError"
    assert [event.name for event in span.events] == ["exception"]
    assert (secret in _everything(span)) is capture


async def test_a_parse_failure_keeps_the_tokens_it_cost(provider, exporter):
    backend = ScriptedBackend(["no contract here"], prompt_tokens=90, completion_tokens=4)

    await traced(backend, provider).arewrite(QUESTION)

    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert recorded["error.type"] == "RewriteParseError"
    assert recorded["vlmguard.fallback"] == "shield"
    assert (recorded["gen_ai.usage.input_tokens"], recorded["gen_ai.usage.output_tokens"]) == (
        90,
        4,
    )


async def test_a_raised_error_is_recorded_with_its_type(provider, exporter):
    backend = ScriptedBackend([ConnectionError("rewriter server down")])

    with pytest.raises(BackendError):
        await traced(backend, provider, on_error="raise").arewrite(QUESTION)

    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "BackendError"
    (event,) = span.events
    assert event.name == "exception"
    assert str((event.attributes or {})["exception.type"]).endswith("BackendError")
    assert "vlmguard.action" not in attributes(span)  # no result, so no outcome


async def test_an_input_error_of_a_conversation_is_an_error_span(provider, exporter):
    rewriter = traced(ScriptedBackend(), provider)
    unreadable = ImagePart(b"these bytes are not an image")
    conversation = Conversation((Turn("user", (TextPart(QUESTION), unreadable)),))

    with pytest.raises(ImageInputError):
        await rewriter.aguard(conversation)

    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "ImageDecodeError"  # an ImageInputError
    assert attributes(span)["vlmguard.image.count"] == 1


@pytest.mark.parametrize("policy", ["shield", "block", "passthrough"])
async def test_history_that_does_not_validate_is_an_error_span_like_any_failure(
    provider, exporter, policy
):
    backend = ScriptedBackend.rewriting_to(REWRITE)
    rewriter = traced(backend, provider, on_error=policy)

    result = await rewriter.arewrite(
        QUESTION, images=[png("red")], history=[{"role": "narrator", "text": "once upon"}]
    )

    assert backend.calls == []  # refused before the rewriter model was asked
    assert (result.risk, result.action) == (None, policy)
    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert span.status.status_code is StatusCode.ERROR
    assert recorded["error.type"] == "InputError"
    assert (recorded["vlmguard.fallback"], recorded["vlmguard.risk"]) == (policy, "unknown")
    assert (recorded["vlmguard.image.count"], recorded["vlmguard.history.turns"]) == (1, 1)


async def test_a_refused_history_under_raise_is_recorded_with_its_exception(provider, exporter):
    rewriter = traced(ScriptedBackend(), provider, on_error="raise")

    with pytest.raises(InputError, match="invalid rewrite request"):
        await rewriter.arewrite(QUESTION, history=[{"role": "user"}])

    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "InputError"
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize("policy", ["shield", "passthrough"])
async def test_text_that_is_not_a_string_is_a_typed_error_and_an_error_span(
    provider, exporter, policy
):
    backend = ScriptedBackend()
    rewriter = traced(backend, provider, on_error=policy)

    # No text means nothing for any policy to shield or pass on: the caller is told.
    with pytest.raises(InputError, match="must be a string or a RewriteRequest, not bytes"):
        await rewriter.arewrite(QUESTION.encode())  # type: ignore[arg-type]

    assert backend.calls == []
    (span,) = guard_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "InputError"
    assert "vlmguard.action" not in attributes(span)


async def test_a_refused_request_records_its_text_only_when_capture_is_on(provider, exporter):
    rewriter = Rewriter(
        ScriptedBackend(),
        telemetry=Telemetry(tracer_provider=provider, capture_message_content=True),
    )

    result = await rewriter.arewrite(QUESTION, history=[{"role": "narrator", "text": "x"}])

    (span,) = guard_spans(exporter)
    assert attributes(span)["vlmguard.content.original"] == QUESTION
    assert attributes(span)["vlmguard.content.prompt"] == result.prompt


async def test_a_cache_hit_reports_no_tokens(provider, exporter):
    backend = ScriptedBackend.rewriting_to(REWRITE, prompt_tokens=10, completion_tokens=5)
    rewriter = traced(backend, provider, cache_size=8)

    await rewriter.arewrite(QUESTION)
    await rewriter.arewrite(QUESTION)

    first, second = guard_spans(exporter)
    assert attributes(first)["vlmguard.cached"] is False
    assert attributes(first)["gen_ai.usage.input_tokens"] == 10
    assert attributes(second)["vlmguard.cached"] is True
    assert "gen_ai.usage.input_tokens" not in attributes(second)
    assert attributes(second)["vlmguard.action"] == "rewrite"


@pytest.mark.parametrize("sync", [False, True])
async def test_the_span_nests_under_the_callers_span(provider, exporter, sync):
    rewriter = traced(ScriptedBackend.rewriting_to(REWRITE), provider)
    tracer = provider.get_tracer("the application")

    with tracer.start_as_current_span("handle request") as parent:
        if sync:  # the synchronous API runs the rewrite on a loop thread of its own
            rewriter.rewrite(QUESTION)
        else:
            await rewriter.arewrite(QUESTION)

    (span,) = guard_spans(exporter)
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    rewriter.close()


def test_the_openai_backend_names_the_model_and_its_usage(provider, exporter):
    scripted = ScriptedBackend.rewriting_to(REWRITE, prompt_tokens=321, completion_tokens=45)
    with ChatCompletionServer(scripted, model="vlmguard-r1") as server:
        backend = load_backend("openai", model="vlmguard-r1", base_url=server.base_url)
        with traced(backend, provider) as rewriter:
            result = rewriter.rewrite(QUESTION, images=[png("red")])

    assert result.prompt == REWRITE
    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert recorded["gen_ai.provider.name"] == "openai"
    assert recorded["gen_ai.request.model"] == "vlmguard-r1"
    assert (recorded["gen_ai.usage.input_tokens"], recorded["gen_ai.usage.output_tokens"]) == (
        321,
        45,
    )


def test_the_langchain_guard_records_one_span_inside_the_callers_span(provider, exporter):
    from langchain_core.language_models import ParrotFakeChatModel
    from langchain_core.messages import HumanMessage

    # The LangChain adapter is a distribution of its own, installed beside the core.
    langchain_vlmguard = pytest.importorskip("langchain_vlmguard")

    image = png("orange")
    rewriter = traced(ScriptedBackend.rewriting_to(REWRITE, risk="high"), provider)
    chain = langchain_vlmguard.VLMGuardRewriter(rewriter=rewriter) | ParrotFakeChatModel()
    message = HumanMessage(
        content=[
            {"type": "text", "text": QUESTION},
            {"type": "image", "base64": _b64(image), "mime_type": "image/png"},
        ]
    )

    with provider.get_tracer("the application").start_as_current_span("chain") as parent:
        answer = chain.invoke([message])

    assert answer.content[0] == {"type": "text", "text": REWRITE}
    (span,) = guard_spans(exporter)
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    recorded = attributes(span)
    assert recorded["vlmguard.risk"] == "high"
    assert recorded["vlmguard.image.sha256"] == (hashlib.sha256(image).hexdigest(),)
    rewriter.close()


def test_the_gateway_records_a_span_for_a_request_of_the_openai_sdk(provider, exporter):
    import openai

    from vlmguard_plugins.server import GatewaySettings, create_app
    from vlmguard_plugins.testing import run_in_thread

    image = png("purple")
    data_url = "data:image/png;base64," + _b64(image)
    upstream = ChatCompletionServer(chunks=["The answer is safe."], model="fake-vlm")
    rewriter = traced(ScriptedBackend.rewriting_to(REWRITE, risk="medium"), provider)
    with upstream:
        settings = GatewaySettings(upstream_url=upstream.base_url)
        with run_in_thread(create_app(settings, rewriter)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            client.chat.completions.create(
                model="fake-vlm",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": QUESTION},
                            {"type": "image_url", "image_url": {"url": data_url}},
                        ],
                    }
                ],
            )
            client.close()

    (received,) = upstream.chat_requests
    assert received.last_user_content[0] == {"type": "text", "text": REWRITE}
    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert recorded["vlmguard.action"] == "rewrite"
    assert recorded["vlmguard.risk"] == "medium"
    assert recorded["vlmguard.image.sha256"] == (hashlib.sha256(image).hexdigest(),)
    assert QUESTION not in _all_values(span)


def _ask_the_gateway(url: str, content: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    try:
        client.chat.completions.create(
            model="fake-vlm", messages=[{"role": "user", "content": content}]
        )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("given", "environment", "captured"),
    [
        ({}, {}, False),
        ({"capture_message_content": True}, {}, True),
        ({}, {"VLMGUARD_GATEWAY_CAPTURE_MESSAGE_CONTENT": "true"}, True),
        ({}, {CAPTURE_CONTENT_ENV: "true"}, True),  # unset follows the GenAI variable
        ({"capture_message_content": False}, {CAPTURE_CONTENT_ENV: "true"}, False),
    ],
)
def test_the_gateway_setting_decides_whether_its_spans_hold_the_text(
    provider, exporter, monkeypatch, given, environment, captured
):
    from vlmguard_plugins.server import GatewaySettings, create_app
    from vlmguard_plugins.testing import run_in_thread

    monkeypatch.delenv("VLMGUARD_GATEWAY_CAPTURE_MESSAGE_CONTENT", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # The gateway builds its own rewriter from its settings, here an OpenAI-compatible
    # rewriter server on loopback.
    rewriter_server = ChatCompletionServer(
        ScriptedBackend.rewriting_to(REWRITE, risk="high"), model="vlmguard-r1"
    )
    upstream = ChatCompletionServer(chunks=["The answer is safe."], model="fake-vlm")
    with rewriter_server, upstream:
        settings = GatewaySettings.load(
            upstream_url=upstream.base_url,
            rewriter_backend="openai",
            rewriter_model="vlmguard-r1",
            rewriter_base_url=rewriter_server.base_url,
            **given,
        )
        with run_in_thread(create_app(settings, tracer_provider=provider)) as url:
            _ask_the_gateway(url, QUESTION)

    (received,) = upstream.chat_requests
    assert received.last_user_content == REWRITE
    (span,) = guard_spans(exporter)
    recorded = attributes(span)
    assert (recorded["vlmguard.action"], recorded["gen_ai.request.model"]) == (
        "rewrite",
        "vlmguard-r1",
    )
    if captured:
        assert recorded["vlmguard.content.original"] == QUESTION
        assert recorded["vlmguard.content.prompt"] == REWRITE
    else:
        assert not any(name.startswith("vlmguard.content.") for name in recorded)
        assert QUESTION not in _all_values(span)
        assert REWRITE not in _all_values(span)


@pytest.mark.parametrize(
    ("option", "expected"),
    [([], None), (["--capture-message-content"], True), (["--no-capture-message-content"], False)],
)
def test_vlmguard_serve_passes_the_content_option_to_the_rewriter(monkeypatch, option, expected):
    from typer.testing import CliRunner

    from vlmguard_plugins.cli import app
    from vlmguard_plugins.server import app as gateway_app

    monkeypatch.delenv("VLMGUARD_GATEWAY_CAPTURE_MESSAGE_CONTENT", raising=False)
    started: list[Any] = []
    monkeypatch.setattr(gateway_app, "serve", lambda settings, **options: started.append(settings))

    outcome = CliRunner().invoke(
        app,
        ["serve", "--upstream", "http://127.0.0.1:9/v1", "--rewriter-backend", "scripted"] + option,
    )

    assert outcome.exit_code == 0, outcome.output
    (settings,) = started
    assert settings.rewriter_settings().capture_message_content is expected


@pytest.mark.parametrize("mode", ["enforce", "speculative"])
def test_the_gateway_rewrite_span_nests_under_the_request_span(provider, exporter, mode):
    from vlmguard_plugins.server import GatewaySettings, create_app
    from vlmguard_plugins.testing import run_in_thread

    tracer = provider.get_tracer("the web framework's instrumentation")
    upstream = ChatCompletionServer(chunks=["The answer is safe."], model="fake-vlm")
    rewriter = traced(ScriptedBackend.rewriting_to(REWRITE), provider)
    with upstream:
        gateway = create_app(GatewaySettings(upstream_url=upstream.base_url, mode=mode), rewriter)

        # What an ASGI instrumentation does: one server span around each HTTP request.
        async def instrumented(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await gateway(scope, receive, send)
                return
            with tracer.start_as_current_span(f"{scope['method']} {scope['path']}"):
                await gateway(scope, receive, send)

        with run_in_thread(instrumented) as url:
            _ask_the_gateway(url, QUESTION)

    (guard,) = guard_spans(exporter)
    (request,) = [s for s in exporter.get_finished_spans() if s.name.startswith("POST ")]
    assert guard.parent is not None
    assert guard.parent.span_id == request.context.span_id
    assert guard.context.trace_id == request.context.trace_id


async def test_switched_off_records_nothing(provider, exporter):
    rewriter = Rewriter(
        ScriptedBackend.rewriting_to(REWRITE),
        telemetry=Telemetry(enabled=False, tracer_provider=provider),
    )

    result = await rewriter.arewrite(QUESTION)

    assert result.prompt == REWRITE
    assert exporter.get_finished_spans() == ()


async def test_without_opentelemetry_installed_the_rewriter_works_unchanged(
    provider, exporter, monkeypatch
):
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    rewriter = traced(ScriptedBackend.rewriting_to(REWRITE, risk="high"), provider)

    result = await rewriter.arewrite(QUESTION, images=[png("red")])

    assert (result.prompt, result.risk_label) == (REWRITE, "high")
    assert exporter.get_finished_spans() == ()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
