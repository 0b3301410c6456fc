"""Hostile requests at the gateway: bodies it cannot parse, credentials in URLs, slow rewrites."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from vlmguard_plugins import Rewriter
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.server.app import RedactQueryStrings
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, run_in_thread

CLIENT_KEY = "client-key-1"
REWRITE = "Answer safely."


@dataclass
class Served:
    url: str
    upstream: ChatCompletionServer
    backend: ScriptedBackend

    def post(self, content: bytes, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
        return httpx.post(
            f"{self.url}/v1/chat/completions", content=content, headers=headers, timeout=60
        )


@contextmanager
def gateway(
    backend: ScriptedBackend | None = None, *, log_level: str = "warning"
) -> Iterator[Served]:
    backend = backend or ScriptedBackend.rewriting_to(REWRITE)
    upstream = ChatCompletionServer(chunks=["The ", "answer ", "is ", "safe."], model="fake-vlm")
    with run_in_thread(upstream.app) as upstream_url:
        settings = GatewaySettings(upstream_url=f"{upstream_url}/v1", client_api_keys=[CLIENT_KEY])
        app = create_app(settings, Rewriter(backend))
        with run_in_thread(app, log_level=log_level) as url:
            yield Served(url, upstream, backend)


@pytest.fixture(scope="module")
def shared() -> Iterator[Served]:
    with gateway() as served:
        yield served


@pytest.fixture
def gw(shared: Served) -> Served:
    shared.upstream.requests.clear()
    shared.backend.calls.clear()
    return shared


# -- bodies the gateway cannot parse -------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "m", "messages": [], "temperature": NaN}',
        b'{"model": "m", "max_tokens": Infinity}',
        b'{"model": "m", "messages": "\xff\xfe"}',
        b"",
        b"[1, 2]",
        b'"just a string"',
    ],
    ids=[
        "deep-arrays",
        "deep-objects",
        "deep-valid",
        "nan",
        "infinity",
        "bad-utf8",
        "empty",
        "array",
        "string",
    ],
)
def test_bodies_that_cannot_be_parsed_are_400_invalid_json(gw: Served, body: bytes) -> None:
    answer = gw.post(body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_json"
    assert "Traceback" not in answer.text
    assert gw.upstream.requests == [] and gw.backend.calls == []


def test_nesting_near_the_interpreter_limit_is_never_a_500(gw: Served) -> None:
    # Valid JSON nested in a field the gateway forwards untouched: it either goes on to
    # the upstream, or is refused as JSON the gateway cannot handle.  Where the limit
    # falls depends on the stack depth of the parse and of the re-serialisation, so
    # every depth around the interpreter's limit is tried.
    statuses = set()
    for depth in [200, *range(900, 1_001), 100_000]:
        nested = b"[" * depth + b"]" * depth
        body = (
            b'{"model": "fake-vlm", "messages": [{"role": "user", "content": "hi"}], '
            b'"x_nested": ' + nested + b"}"
        )
        answer = gw.post(body)
        assert answer.status_code in (200, 400), (depth, answer.text)
        if answer.status_code == 400:
            assert answer.json()["error"]["code"] == "invalid_json"
        statuses.add(answer.status_code)
    assert statuses == {200, 400}
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


def test_text_the_upstream_cannot_take_as_utf8_is_sent_escaped(gw: Served) -> None:
    # A lone surrogate is valid JSON but not encodable as UTF-8.
    body = (
        b'{"model": "fake-vlm", "messages": [{"role": "user", "content": "hi \\ud800"}], '
        b'"x": "\\udfff"}'
    )
    answer = gw.post(body)
    assert answer.status_code == 200, answer.text
    received = gw.upstream.requests[0].body
    assert received is not None and received["x"] == "\udfff"
    assert received["messages"][0]["content"] == REWRITE


# -- credentials in the URL ----------------------------------------------------------------


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_query_string_credentials_are_refused_and_never_logged() -> None:
    secrets = ["sk-in-the-url-1", "sk-in-the-url-2", "sk-in-the-url-3"]
    recorder = _Recorder()
    watched = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access")]
    with gateway(log_level="info") as served:
        # Attached once both servers have configured logging (which replaces handlers).
        for logger in watched:
            logger.addHandler(recorder)
        try:
            chat = f"{served.url}/v1/chat/completions"
            body = {"model": "fake-vlm", "messages": [{"role": "user", "content": "hi"}]}
            # A key in the query string is not a key: 401, and nothing forwarded.
            refused = httpx.post(f"{chat}?api_key={secrets[0]}", json=body)
            assert refused.status_code == 401
            refused = httpx.post(f"{chat}?key={secrets[1]}&x=1", json=body)
            assert refused.status_code == 401
            assert served.upstream.requests == []
            # Even next to a valid key, the query is not written down.
            accepted = httpx.get(
                f"{served.url}/v1/models?api_key={secrets[2]}",
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            )
            assert accepted.status_code == 200
        finally:
            for logger in watched:
                logger.removeHandler(recorder)
    access = [line for line in recorder.lines if line.startswith("uvicorn.access")]
    assert any("/v1/chat/completions" in line and "401" in line for line in access), access
    assert any("/v1/models" in line and "200" in line for line in access), access
    for line in recorder.lines:
        assert not any(secret in line for secret in secrets), line


def test_the_redaction_filter_cuts_queries_from_any_path_argument() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/models?api_key=secret", "1.1", 200),
        None,
    )
    assert RedactQueryStrings().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /v1/models HTTP/1.1" 200'


# -- the gateway stays responsive ------------------------------------------------------------


def test_healthz_answers_while_a_slow_rewrite_and_a_stalled_upload_are_in_flight() -> None:
    backend = ScriptedBackend.rewriting_to(REWRITE, delay_s=4)
    with gateway(backend) as served:
        # A client that announces a body and never sends it.
        address = urlsplit(served.url)
        stalled = socket.create_connection((address.hostname, address.port))
        stalled.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"model":'
        )
        with ThreadPoolExecutor(1) as pool:
            body = {"model": "fake-vlm", "messages": [{"role": "user", "content": "hi"}]}
            slow = pool.submit(
                httpx.post,
                f"{served.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                timeout=60,
            )
            deadline = time.monotonic() + 30
            while backend.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert backend.in_flight == 1
            started = time.monotonic()
            health = httpx.get(f"{served.url}/healthz", timeout=10)
            elapsed = time.monotonic() - started
            assert health.status_code == 200
            assert elapsed < 2.0  # generous: the rewrite still has seconds to go
            assert backend.in_flight == 1 and not slow.done()
            assert slow.result().status_code == 200
        stalled.close()
