"""The gateway's upstream connection, and the docs page's runnable example."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from vlmguard_plugins.server.errors import GatewayError
from vlmguard_plugins.server.metrics import GatewayMetrics
from vlmguard_plugins.server.upstream import Upstream

DOCS = Path(__file__).parents[1] / "docs" / "gateway.md"


def _upstream(handler) -> Upstream:
    return Upstream(
        "http://vlm.test/v1",
        api_key="sk-upstream",
        timeout_s=5,
        connect_timeout_s=5,
        max_connections=4,
        metrics=GatewayMetrics(),
        transport=httpx.MockTransport(handler),
    )


async def test_a_keep_alive_connection_closed_by_the_upstream_is_retried_once() -> None:
    seen: list[httpx.Request] = []

    def closes_first_connection(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json={"object": "list", "data": []})

    upstream = _upstream(closes_first_connection)
    response = await upstream.open("GET", "models")
    assert response.status_code == 200
    await response.aclose()
    assert [str(r.url) for r in seen] == ["http://vlm.test/v1/models"] * 2
    assert seen[1].headers["authorization"] == "Bearer sk-upstream"
    await upstream.aclose()


async def test_an_upstream_that_keeps_dropping_connections_is_502() -> None:
    def always_drops(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer")

    upstream = _upstream(always_drops)
    with pytest.raises(GatewayError) as caught:
        await upstream.open("POST", "chat/completions", {"model": "m", "messages": []})
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unavailable"
    text = upstream.metrics.render().decode()
    assert 'vlmguard_gateway_upstream_errors_total{kind="connect"} 1.0' in text
    await upstream.aclose()


def test_the_docs_testing_example_runs() -> None:
    section = DOCS.read_text().split("## Testing code that uses the gateway", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(code, str(DOCS), "exec"), {})
