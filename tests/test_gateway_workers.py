"""Sharded upstream pools and ``vlmguard serve --workers N``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from vlmguard_plugins import Rewriter
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.server.metrics import GatewayMetrics
from vlmguard_plugins.server.upstream import Upstream
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, run_in_thread


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VLMGUARD_GATEWAY_"):
            monkeypatch.delenv(name)


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": []})


async def test_requests_take_the_pools_in_turn_and_closing_closes_them_all() -> None:
    upstream = Upstream(
        "http://vlm.test/v1",
        api_key="sk-upstream",
        timeout_s=5,
        connect_timeout_s=5,
        max_connections=10,
        metrics=GatewayMetrics(),
        transport=httpx.MockTransport(_ok),
        clients=3,
    )
    assert len(upstream.clients) == 3
    used: list[int] = []

    def recording(index: int, send: Any) -> Any:
        async def wrapper(request: httpx.Request, **options: Any) -> httpx.Response:
            used.append(index)
            return await send(request, **options)

        return wrapper

    for index, client in enumerate(upstream.clients):
        client.send = recording(index, client.send)  # type: ignore[method-assign]
    for _ in range(7):
        response = await upstream.open("GET", "models")
        assert response.headers  # answered
        await response.aclose()
    assert used == [0, 1, 2, 0, 1, 2, 0]
    await upstream.aclose()
    assert all(client.is_closed for client in upstream.clients)


async def test_each_pool_holds_its_share_of_the_connections() -> None:
    def pool_limit(client: httpx.AsyncClient) -> int:
        return client._transport._pool._max_connections  # type: ignore[attr-defined]

    def upstream(clients: int, max_connections: int) -> Upstream:
        return Upstream(
            "http://vlm.test/v1",
            api_key=None,
            timeout_s=5,
            connect_timeout_s=5,
            max_connections=max_connections,
            metrics=GatewayMetrics(),
            clients=clients,
        )

    eight = upstream(8, 1000)
    assert [pool_limit(c) for c in eight.clients] == [125] * 8
    uneven = upstream(3, 10)
    assert [pool_limit(c) for c in uneven.clients] == [4, 4, 4]
    # Never more pools than connections.
    few = upstream(8, 2)
    assert [pool_limit(c) for c in few.clients] == [1, 1]
    for each in (eight, uneven, few):
        await each.aclose()
    with pytest.raises(ValueError):
        upstream(0, 10)


def test_the_app_shards_the_upstream_and_closes_every_pool_on_shutdown() -> None:
    from fastapi.testclient import TestClient

    settings = GatewaySettings(upstream_url="http://127.0.0.1:9/v1", upstream_clients=4)
    app = create_app(settings, rewriter=Rewriter(ScriptedBackend.rewriting_to("Describe it.")))
    clients = app.state.upstream.clients
    assert len(clients) == 4
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert not any(c.is_closed for c in clients)
    assert all(c.is_closed for c in clients)


def test_settings_travel_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = GatewaySettings.load(
        upstream_url="http://127.0.0.1:8000/v1",
        upstream_api_key="sk-upstream",
        client_api_keys=["a", "b"],
        host="0.0.0.0",
        expose_analysis=True,
        upstream_clients=3,
        workers=4,
        rewriter_backend="scripted",
    )
    variables = settings.environment()
    assert variables["VLMGUARD_GATEWAY_CLIENT_API_KEYS"] == "a,b"
    # A None setting is carried by the variable's absence.
    monkeypatch.setenv("VLMGUARD_GATEWAY_REWRITER_MODEL", "stale")
    for name in settings.unset_environment():
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert GatewaySettings.load() == settings
    from vlmguard_plugins.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="comma"):
        settings.model_copy(update={"client_api_keys": ["a,b"]}).environment()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_with_two_workers_answers_and_stops_on_sigterm() -> None:
    upstream = ChatCompletionServer(chunks=["all ", "fine"], model="fake-vlm")
    with run_in_thread(upstream.app) as upstream_url:
        port = _free_port()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLMGUARD_GATEWAY_UPSTREAM_API_KEY": "sk-upstream-secret",
        }
        script = Path(sys.executable).parent / "vlmguard"
        command = [str(script), "serve", "--upstream", f"{upstream_url}/v1"]
        command += ["--rewriter-backend", "scripted", "--workers", "2"]
        command += ["--port", str(port), "--api-key", "client-key", "--log-level", "info"]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            gateway_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 25
            while True:
                assert process.poll() is None, process.communicate()[1]
                try:
                    if httpx.get(f"{gateway_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the workers did not become healthy"
                time.sleep(0.2)
            client = openai.OpenAI(
                base_url=f"{gateway_url}/v1", api_key="client-key", max_retries=0, timeout=20
            )
            completion = client.chat.completions.create(
                model="fake-vlm", messages=[{"role": "user", "content": "Hello there"}]
            )
            assert completion.choices[0].message.content == "all fine"
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=20)
            assert process.returncode in (0, -signal.SIGTERM)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "workers: 2" in stderr
    assert stderr.count("Started server process") == 2
    assert "Traceback" not in stderr
    assert "sk-upstream-secret" not in stderr
    (request,) = upstream.requests
    assert request.headers["authorization"] == "Bearer sk-upstream-secret"


def test_workers_that_cannot_start_stop_the_command_instead_of_restarting() -> None:
    env = {**os.environ, "VLMGUARD_GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9/v1"}
    script = Path(sys.executable).parent / "vlmguard"
    command = [str(script), "serve", "--rewriter-backend", "no-such-backend"]
    command += ["--workers", "2", "--port", str(_free_port())]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert completed.stderr.count("the gateway could not start: unknown backend") >= 1
    assert "Traceback" not in completed.stderr
