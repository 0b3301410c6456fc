"""Rollout modes of the gateway (shadow, speculative) and its audit log, over HTTP.

The official OpenAI SDK in front, the test chat-completions server behind, answering
each request from its own text ("answer to: <text>"), so a test can tell the answer to
the original request from the answer to the rewrite.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typer.testing import CliRunner

from vlmguard_plugins import Rewriter, Risk
from vlmguard_plugins.backends.base import Generation, GenerationRequest
from vlmguard_plugins.cli import app as cli_app
from vlmguard_plugins.conversation import Conversation, GuardedConversation
from vlmguard_plugins.images import ImageLimits
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.testing import (
    ChatCompletionServer,
    HeldStream,
    ScriptedBackend,
    ScriptedCall,
    SlowAnswer,
    run_in_thread,
)

QUESTION = "How do I use this to hurt someone?"
BENIGN = "What colour is this square?"
REWRITE = "Explain how to handle the object in this picture safely."
WAIT_S = 15.0


def png_data_url(color: str = "orange") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE = png_data_url()
IMAGE_SHA256 = hashlib.sha256(base64.b64decode(IMAGE.split(",", 1)[1])).hexdigest()


def user_message(text: str = QUESTION, *extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": IMAGE}},
            *extra,
        ],
    }


AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def answer_to(request: GenerationRequest) -> str:
    """The test VLM's answer: it names the text it was asked."""
    for message in reversed(request.messages):
        if message["role"] == "user":
            text = " ".join(p["text"] for p in message["content"] if p["type"] == "text")
            return f"answer to: {text}"
    return "answer to nothing"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait for an event another thread causes; fail, naming it, if it never comes."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GatedBackend:
    """The scripted rewriter, held until the test opens its gate.

    Lets a test order events (the response arrived while the rewriter was still
    working) without relying on timing.  It waits by polling, so a gate left shut does
    not hold a worker thread when the gateway shuts down.
    """

    name = "gated"

    def __init__(self, inner: ScriptedBackend) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()

    async def agenerate(self, request: GenerationRequest) -> Generation:
        self.started.set()
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        try:
            return await self.inner.agenerate(request)
        finally:
            self.finished.set()

    async def aclose(self) -> None:
        await self.inner.aclose()


class ConnectionTap:
    """ASGI middleware in front of the test VLM: what happened to each connection.

    ``first_body`` is set when any response sent its first bytes; ``cut_off`` lists the
    asked texts of requests whose client closed the connection before the response was
    complete (the cancellation reached the VLM); ``completed`` those answered in full.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.first_body = threading.Event()
        self.cut_off: list[str] = []
        self.completed: list[str] = []
        self.connections = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.connections += 1
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        body = bytearray()
        done = False
        text = ""

        async def pump() -> None:
            # One reader of the connection, so a disconnect is seen even while the
            # app is not listening (a non-streamed answer being prepared).
            nonlocal text
            while True:
                message = await receive()
                if message["type"] == "http.request":
                    body.extend(message.get("body", b""))
                    if not message.get("more_body"):
                        text = _asked(bytes(body))
                elif message["type"] == "http.disconnect":
                    if not done:
                        self.cut_off.append(text)
                    await inbox.put(message)
                    return
                await inbox.put(message)

        async def tapped_send(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.body":
                if message.get("body"):
                    self.first_body.set()
                if not message.get("more_body"):
                    done = True
                    self.completed.append(text)
            await send(message)

        reader = asyncio.ensure_future(pump())
        try:
            await self.app(scope, inbox.get, tapped_send)
        finally:
            reader.cancel()


def _asked(raw: bytes) -> str:
    try:
        messages = json.loads(raw).get("messages", [])
    except (ValueError, AttributeError):
        return ""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


@dataclass
class Harness:
    url: str
    client: Any  # the tests send plain message dicts, as clients of any SDK do
    vlm: ChatCompletionServer
    tap: ConnectionTap
    audit_path: Path

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@contextmanager
def gateway(
    tmp_path: Path,
    backend: Any,
    *,
    vlm: ChatCompletionServer | None = None,
    **settings: Any,
) -> Iterator[Harness]:
    vlm = vlm or ChatCompletionServer(responder=answer_to, model="fake-vlm")
    tap = ConnectionTap(vlm.app)
    audit_path = tmp_path / "audit.jsonl"
    with run_in_thread(tap) as vlm_url:
        config = GatewaySettings(
            upstream_url=f"{vlm_url}/v1", audit_log=str(audit_path), **settings
        )
        with run_in_thread(create_app(config, Rewriter(backend))) as url:
            client = openai.OpenAI(
                base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=2 * WAIT_S
            )
            yield Harness(url, client, vlm, tap, audit_path)
            client.close()
        vlm.release.set()  # frees a held stream's waiting thread
        vlm.stop()  # ends a slow answer's wait (the VLM's app is served by the tap)


def streamed_text(stream: Any) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


# -- shadow mode ---------------------------------------------------------------------


def test_shadow_forwards_the_original_and_records_the_would_be_rewrite(tmp_path: Path) -> None:
    backend = ScriptedBackend.rewriting_to(REWRITE, risk="high")
    with gateway(tmp_path, backend, mode="shadow", audit_include_text=True) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="fake-vlm", messages=[user_message()], temperature=0.3
        )
        assert raw.parse().choices[0].message.content == f"answer to: {QUESTION}"
        (received,) = gw.vlm.chat_requests
        assert received.messages == [user_message()]  # exactly as the client sent it
        assert received.body is not None and received.body["temperature"] == 0.3

        wait_for(lambda: bool(gw.audit_path.read_text()), "the shadow decision")
        (line,) = gw.audit()
        assert line["mode"] == "shadow" and line["request_id"] == raw.headers["x-request-id"]
        assert (line["risk"], line["action"], line["changed"]) == ("high", "rewrite", True)
        assert line["rewrite"] == REWRITE and "textual: scripted" in line["analysis"]
        assert f"-{QUESTION}\n" in line["diff"] and f"+{REWRITE}\n" in line["diff"]
        assert gw.metric("vlmguard_gateway_shadow_decisions_total", action="rewrite") == 1
        # Nothing was enforced.
        assert gw.metric("vlmguard_gateway_rewrites_total") == 0


def test_shadow_answers_before_the_rewriter_has_finished(tmp_path: Path) -> None:
    backend = GatedBackend(ScriptedBackend.rewriting_to(REWRITE, risk="high"))
    with gateway(tmp_path, backend, mode="shadow") as gw:
        stream = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message()], stream=True
        )
        # The whole answer arrived while the rewriter could not have answered.
        assert streamed_text(stream) == f"answer to: {QUESTION}"
        assert not backend.finished.is_set()
        assert not gw.audit_path.read_text()

        backend.gate.set()
        wait_for(lambda: bool(gw.audit_path.read_text()), "the shadow decision")
        (line,) = gw.audit()
        assert (line["risk"], line["action"]) == ("high", "rewrite")
        # Text is off by default: neither the diff nor the rewrite is written.
        assert "diff" not in line and "rewrite" not in line


def test_shadow_records_what_enforce_would_refuse_and_still_forwards(tmp_path: Path) -> None:
    # A VLM that reads audio: the gateway in shadow mode must not stand in its way.
    vlm = ChatCompletionServer(chunks=["heard ", "it"], model="fake-vlm")
    with gateway(tmp_path, ScriptedBackend(), vlm=vlm, mode="shadow") as gw:
        completion = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message(QUESTION, AUDIO)]
        )
        assert completion.choices[0].message.content == "heard it"
        assert gw.vlm.chat_requests[0].messages == [user_message(QUESTION, AUDIO)]
        wait_for(lambda: bool(gw.audit_path.read_text()), "the would-be refusal")
        (line,) = gw.audit()
        assert (line["action"], line["risk"], line["error"]) == (
            "refused_input",
            "unknown",
            "unsupported_content",
        )
        assert gw.metric("vlmguard_gateway_shadow_decisions_total", action="refused_input") == 1


def test_a_failing_shadow_rewriter_never_touches_the_response(tmp_path: Path) -> None:
    backend = ScriptedBackend([RuntimeError("the rewriter's server is down")])
    with gateway(tmp_path, backend, mode="shadow", on_error="raise") as gw:
        completion = gw.client.chat.completions.create(model="fake-vlm", messages=[user_message()])
        assert completion.choices[0].message.content == f"answer to: {QUESTION}"
        wait_for(lambda: bool(gw.audit_path.read_text()), "the failure record")
        (line,) = gw.audit()
        assert (line["action"], line["risk"]) == ("guard_unavailable", "unknown")


def test_shadow_work_is_bounded_and_cancelled_at_shutdown(tmp_path: Path) -> None:
    backend = GatedBackend(ScriptedBackend.rewriting_to(REWRITE))  # never released
    with gateway(
        tmp_path, backend, mode="shadow", shadow_max_concurrency=1, graceful_shutdown_s=0.1
    ) as gw:
        for _ in range(2):
            completion = gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message()]
            )
            assert completion.choices[0].message.content == f"answer to: {QUESTION}"
        (skipped,) = gw.audit()
        assert (skipped["action"], skipped["error"]) == ("skipped", "shadow queue full")
        assert gw.metric("vlmguard_gateway_shadow_decisions_total", action="skipped") == 1
        wait_for(backend.started.is_set, "the first shadow rewrite to reach the rewriter")
    # The gateway has stopped: the rewrite still in flight was cancelled and recorded.
    first, second = gw.audit()
    assert second["action"] == "cancelled" and second["request_id"] != first["request_id"]


# -- speculative mode ------------------------------------------------------------------


def test_speculative_benign_stream_is_the_original_answer_released_at_the_verdict(
    tmp_path: Path,
) -> None:
    backend = GatedBackend(ScriptedBackend())  # risk none, text unchanged
    with gateway(tmp_path, backend, mode="speculative") as gw, ThreadPoolExecutor(1) as pool:
        received: list[tuple[str, bool]] = []

        def read() -> None:
            stream = gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message(BENIGN)], stream=True
            )
            for chunk in stream:
                for choice in chunk.choices:
                    received.append((choice.delta.content or "", backend.gate.is_set()))

        reading = pool.submit(read)
        # The VLM has answered in full; the gateway holds it until the verdict.
        wait_for(lambda: bool(gw.tap.completed), "the VLM's whole answer")
        backend.gate.set()
        reading.result(timeout=WAIT_S)

        assert "".join(text for text, _ in received) == f"answer to: {BENIGN}"
        assert all(after_verdict for _, after_verdict in received)
        assert len(gw.vlm.chat_requests) == 1  # one VLM call: the original
        assert gw.metric("vlmguard_gateway_speculative_hits_total") == 1
        assert gw.metric("vlmguard_gateway_speculative_wasted_upstream_calls_total") == 0
        (line,) = gw.audit()
        assert (line["mode"], line["action"], line["speculative"]) == (
            "speculative",
            "unchanged",
            "hit",
        )


def test_speculative_risky_stream_never_shows_the_original_and_cancels_it(
    tmp_path: Path,
) -> None:
    backend = GatedBackend(ScriptedBackend.rewriting_to(REWRITE, risk="high"))
    with gateway(tmp_path, backend, mode="speculative") as gw, ThreadPoolExecutor(1) as pool:
        # The original's answer starts, then the VLM keeps generating it.
        gw.vlm.inject(HeldStream(timeout_s=WAIT_S))
        reading = pool.submit(
            lambda: streamed_text(
                gw.client.chat.completions.create(
                    model="fake-vlm", messages=[user_message()], stream=True
                )
            )
        )
        wait_for(gw.tap.first_body.is_set, "the original answer's first bytes")
        backend.gate.set()

        assert reading.result(timeout=WAIT_S) == f"answer to: {REWRITE}"
        original, guarded = gw.vlm.chat_requests
        assert original.text == QUESTION and guarded.text == REWRITE
        assert guarded.image_urls == [IMAGE]
        # The original call's stream was closed: the VLM stopped generating it.
        wait_for(lambda: gw.vlm.abandoned_streams == 1, "the original stream to be closed")
        assert gw.tap.cut_off == [QUESTION]
        assert gw.metric("vlmguard_gateway_speculative_misses_total") == 1
        assert gw.metric("vlmguard_gateway_speculative_wasted_upstream_calls_total") == 1
        assert gw.audit()[0]["speculative"] == "miss"


def test_speculative_whole_answers_are_released_or_replaced(tmp_path: Path) -> None:
    risky = format_output("textual: scripted", Risk.MEDIUM, REWRITE)
    backend = GatedBackend(
        ScriptedBackend(
            responder=lambda request: (
                ScriptedBackend.echo_unchanged(request)
                if ScriptedCall(request).user_text == BENIGN
                else risky
            )
        )
    )
    with (
        gateway(tmp_path, backend, mode="speculative", expose_analysis=True) as gw,
        ThreadPoolExecutor(1) as pool,
    ):
        backend.gate.set()
        benign = gw.client.chat.completions.create(
            model="fake-vlm", messages=[user_message(BENIGN)]
        )
        assert benign.choices[0].message.content == f"answer to: {BENIGN}"
        assert benign.model_extra["vlmguard"]["action"] == "unchanged"

        # The original call is slow: the verdict comes while the VLM is still on it.
        backend.gate.clear()
        gw.vlm.inject(SlowAnswer(delay_s=WAIT_S))
        asking = pool.submit(
            gw.client.chat.completions.create, model="fake-vlm", messages=[user_message()]
        )
        wait_for(lambda: len(gw.vlm.chat_requests) == 2, "the original request upstream")
        backend.gate.set()
        replaced = asking.result(timeout=WAIT_S)

        assert replaced.choices[0].message.content == f"answer to: {REWRITE}"
        assert replaced.model_extra["vlmguard"]["rewritten_prompt"] == REWRITE
        wait_for(lambda: QUESTION in gw.tap.cut_off, "the original call to be cancelled")
        assert [r.text for r in gw.vlm.chat_requests] == [BENIGN, QUESTION, REWRITE]
        assert gw.metric("vlmguard_gateway_speculative_hits_total") == 1
        assert gw.metric("vlmguard_gateway_speculative_misses_total") == 1


def truncated_png_url() -> str:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(buffer, "PNG")
    data = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a valid header, half the pixels
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


REFUSED: dict[str, tuple[Callable[[], dict[str, Any]], ImageLimits | None, str]] = {
    "truncated image": (lambda: image_part(truncated_png_url()), None, "invalid_image"),
    "image over the pixel limit": (
        lambda: image_part(IMAGE),  # 32x24 pixels
        ImageLimits(max_pixels=500),
        "invalid_image",
    ),
    "link-local URL": (
        lambda: image_part("http://169.254.169.254/latest/meta-data/iam/x.png"),
        None,
        "invalid_image",
    ),
    "unsupported part": (lambda: AUDIO, None, "unsupported_content"),
}
"""Input the guard refuses: the message part, the image limits, the error code."""


class SlowChecks(Rewriter):
    """A rewriter whose input checks begin only once the VLM was called (or after 0.3 s).

    A gateway that sent the original request before the checks had passed would
    certainly reach the VLM first.
    """

    def __init__(self, vlm: ChatCompletionServer, limits: ImageLimits | None) -> None:
        super().__init__(ScriptedBackend(), image_limits=limits)
        self.vlm = vlm

    async def aguard(self, conversation: Conversation, **kwargs: Any) -> GuardedConversation:
        deadline = time.monotonic() + 0.3
        while not self.vlm.chat_requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await super().aguard(conversation, **kwargs)


@pytest.mark.parametrize("case", list(REFUSED))
def test_speculative_mode_sends_nothing_upstream_that_enforce_mode_refuses(case: str) -> None:
    part, limits, code = REFUSED[case]
    replies: dict[str, set[tuple[int, str]]] = {}
    for mode in ("enforce", "speculative"):
        vlm = ChatCompletionServer(responder=answer_to, model="fake-vlm").start()
        settings = GatewaySettings(upstream_url=vlm.base_url, mode=mode)
        try:
            with run_in_thread(create_app(settings, SlowChecks(vlm, limits))) as url:
                for stream in (False, True):
                    reply = httpx.post(
                        f"{url}/v1/chat/completions",
                        json={
                            "model": "fake-vlm",
                            "messages": [user_message(QUESTION, part())],
                            "stream": stream,
                        },
                        timeout=WAIT_S,
                    )
                    replies.setdefault(mode, set()).add(
                        (reply.status_code, reply.json()["error"]["code"])
                    )
            assert vlm.chat_requests == []  # nothing reached the VLM, not even speculatively
        finally:
            vlm.stop()
    assert replies["speculative"] == replies["enforce"] == {(400, code)}


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_before_the_verdict_gets_nothing_generated(
    tmp_path: Path, stream: bool
) -> None:
    backend = GatedBackend(ScriptedBackend.rewriting_to(REWRITE, risk="high"))
    with gateway(tmp_path, backend, mode="speculative") as gw:
        # The original answer takes a while.
        gw.vlm.inject(HeldStream(timeout_s=WAIT_S) if stream else SlowAnswer(delay_s=WAIT_S))
        body = json.dumps(
            {"model": "fake-vlm", "messages": [user_message()], "stream": stream}
        ).encode()
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_for(lambda: len(gw.vlm.chat_requests) == 1, "the original request upstream")
        # The client has gone: the original call is cancelled...
        wait_for(lambda: gw.tap.cut_off == [QUESTION], "the original call to be cancelled")
        backend.gate.set()
        time.sleep(0.3)  # room for a guarded request, which must not come
        # ...and the guarded request is never sent for nobody.
        assert [r.text for r in gw.vlm.chat_requests] == [QUESTION]
        assert gw.tap.completed == []


# -- the audit log in enforce mode -------------------------------------------------------


@pytest.mark.parametrize("include_text", [False, True])
def test_enforce_audit_lines_hash_images_and_hold_text_only_when_asked(
    tmp_path: Path, include_text: bool
) -> None:
    backend = ScriptedBackend.rewriting_to(REWRITE, risk="high")
    with gateway(tmp_path, backend, audit_include_text=include_text) as gw:
        raw = gw.client.chat.completions.with_raw_response.create(
            model="fake-vlm",
            messages=[user_message()],
            extra_headers={"X-Request-Id": "trace-42"},
        )
        assert raw.parse().choices[0].message.content == f"answer to: {REWRITE}"
        assert raw.headers["x-request-id"] == "trace-42"
        written = gw.audit_path.read_text()
        (line,) = gw.audit()

    assert line["request_id"] == "trace-42" and line["model"] == "fake-vlm"
    assert (line["mode"], line["risk"], line["action"], line["policy"]) == (
        "enforce",
        "high",
        "rewrite",
        "shield",
    )
    assert line["image_count"] == 1
    assert line["images"][0]["sha256"] == IMAGE_SHA256
    assert line["latency_ms"] >= 0
    # Never the image itself, in any encoding.
    assert IMAGE.split(",", 1)[1][:64] not in written
    if include_text:
        assert (line["text"], line["rewrite"]) == (QUESTION, REWRITE)
        assert "textual: scripted" in line["analysis"]
    else:
        assert QUESTION not in written and REWRITE not in written
        assert "scripted" not in written


def test_enforce_refusals_are_audited(tmp_path: Path) -> None:
    with gateway(tmp_path, ScriptedBackend()) as gw:
        with pytest.raises(openai.BadRequestError):
            gw.client.chat.completions.create(
                model="fake-vlm", messages=[user_message(QUESTION, AUDIO)]
            )
        assert gw.vlm.chat_requests == []
        (line,) = gw.audit()
        assert (line["action"], line["error"], line["image_count"]) == (
            "refused_input",
            "unsupported_content",
            1,
        )
        assert "detail" not in line  # an error message may quote the input


# -- settings ---------------------------------------------------------------------------


def test_the_mode_and_audit_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VLMGUARD_GATEWAY_UPSTREAM_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("VLMGUARD_GATEWAY_MODE", "speculative")
    monkeypatch.setenv("VLMGUARD_GATEWAY_AUDIT_LOG", "/var/log/vlmguard/audit.jsonl")
    monkeypatch.setenv("VLMGUARD_GATEWAY_AUDIT_INCLUDE_TEXT", "true")
    settings = GatewaySettings.load()
    assert (settings.mode, settings.audit_log, settings.audit_include_text) == (
        "speculative",
        "/var/log/vlmguard/audit.jsonl",
        True,
    )
    # The option wins over the variable.
    assert GatewaySettings.load(mode="shadow").mode == "shadow"
    # Workers get the same settings back from the variables.
    assert GatewaySettings.load().environment()["VLMGUARD_GATEWAY_MODE"] == "speculative"


def test_serve_refuses_an_unknown_mode_and_an_unwritable_audit_log(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--rewriter-backend", "scripted"]
    unknown = runner.invoke(cli_app, [*base, "--mode", "observe"])
    assert unknown.exit_code == 2
    assert "mode" in unknown.output and "enforce" in unknown.output
    unwritable = runner.invoke(cli_app, [*base, "--audit-log", str(tmp_path / "no" / "a.jsonl")])
    assert unwritable.exit_code == 2
    assert "cannot open the audit log" in unwritable.output
