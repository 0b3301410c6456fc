"""`vlmguard serve` and its settings, as an operator runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from typer.testing import CliRunner

from vlmguard_plugins import shield_prompt
from vlmguard_plugins.cli import app
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.server import GatewaySettings
from vlmguard_plugins.settings import DEFAULT_REWRITER_MODEL
from vlmguard_plugins.testing import ChatCompletionServer, run_in_thread

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_gateway_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VLMGUARD_GATEWAY_"):
            monkeypatch.delenv(name)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMGUARD_GATEWAY_UPSTREAM_URL", "http://vlm.internal:8000/v1/")
    monkeypatch.setenv("VLMGUARD_GATEWAY_UPSTREAM_API_KEY", "sk-upstream")
    monkeypatch.setenv("VLMGUARD_GATEWAY_CLIENT_API_KEYS", "key-a, key-b")
    monkeypatch.setenv("VLMGUARD_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("VLMGUARD_GATEWAY_ON_ERROR", "block")
    settings = GatewaySettings.load()
    assert settings.upstream_url == "http://vlm.internal:8000/v1"
    assert settings.client_api_keys == ["key-a", "key-b"]
    assert settings.on_error == "block"
    assert settings.upstream_api_key is not None
    assert settings.upstream_api_key.get_secret_value() == "sk-upstream"
    # Secrets never show in logs or tracebacks that print the settings.
    assert "sk-upstream" not in repr(settings) and "sk-upstream" not in str(settings)
    # An explicit value wins over the environment; None means "not given".
    assert GatewaySettings.load(on_error="raise", port=None).on_error == "raise"
    monkeypatch.setenv("VLMGUARD_GATEWAY_UNSUPPORTED_CONTENT", "drop")
    assert GatewaySettings.load().unsupported_content == "drop"


def test_the_rewriter_is_described_by_the_core_settings() -> None:
    settings = GatewaySettings.load(
        upstream_url="http://127.0.0.1:8000/v1",
        rewriter_backend="openai",
        rewriter_model="vlmguard-r1",
        rewriter_base_url="http://127.0.0.1:8001/v1",
        rewriter_api_key="sk-rewriter",
        rewriter_timeout_s=5,
        rewriter_max_concurrency=3,
        rewriter_max_new_tokens=64,
        rewriter_max_text_chars=99,
        on_error="block",
        unsupported_content="drop",
        max_images=2,
        max_image_bytes=4096,
        max_image_pixels=1000,
        allow_remote_images=True,
        allowed_image_hosts="images.example, cdn.example",
    )
    core = settings.rewriter_settings()
    assert core.backend_kwargs() == {
        "model": "vlmguard-r1",
        "base_url": "http://127.0.0.1:8001/v1",
        "api_key": "sk-rewriter",
    }
    assert (core.on_error, core.timeout_s, core.max_concurrency) == ("block", 5, 3)
    assert (core.max_new_tokens, core.unsupported_content) == (64, "drop")
    assert core.max_text_chars == 99
    assert (core.max_images, core.max_image_bytes, core.max_image_pixels) == (2, 4096, 1000)
    policy = core.url_policy()
    assert policy.allow_remote and not policy.allow_private_addresses
    assert policy.allowed_hosts == frozenset({"images.example", "cdn.example"})
    rewriter = settings.rewriter_settings().model_copy(update={"backend": "scripted"})
    built = rewriter.model_copy(update={"model": None, "base_url": None, "api_key": None}).build()
    assert built.on_error == "block" and built.unsupported_content == "drop"
    assert built.image_limits.max_images == 2
    # Without a model, the core's default applies to the backends that need one.
    default = GatewaySettings.load(upstream_url="http://127.0.0.1:8000/v1")
    assert default.rewriter_settings().backend_kwargs()["model"] == DEFAULT_REWRITER_MODEL
    with pytest.raises(ConfigurationError, match="unsupported_content"):
        GatewaySettings.load(upstream_url="http://x/v1", unsupported_content="keep")


def test_settings_errors_say_what_to_fix() -> None:
    with pytest.raises(ConfigurationError, match="VLMGUARD_GATEWAY_UPSTREAM_URL"):
        GatewaySettings.load()
    with pytest.raises(ConfigurationError, match="refusing to listen on 0.0.0.0"):
        GatewaySettings.load(upstream_url="http://127.0.0.1:8000/v1", host="0.0.0.0")
    with pytest.raises(ConfigurationError, match="on_error"):
        GatewaySettings.load(upstream_url="http://127.0.0.1:8000/v1", on_error="ignore")
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        GatewaySettings.load(upstream_url="file:///etc")
    # With client keys any address is allowed.
    assert GatewaySettings.load(upstream_url="http://x/v1", host="::", client_api_keys=["k"])


def test_serve_reports_bad_settings_without_a_traceback() -> None:
    result = runner.invoke(
        app, ["serve", "--upstream", "http://127.0.0.1:9/v1", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without client API keys" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "upstream_url is required" in result.output


def test_serve_is_listed_and_the_cli_imports_no_server_stack() -> None:
    # Wide enough that rich does not shorten the option names.
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--upstream",
        "--api-key",
        "--on-error",
        "--expose-analysis",
        "--cors-origin",
        "--unsupported-content",
    ):
        assert option in result.output
    heavy = "{'fastapi', 'uvicorn', 'torch', 'pydantic_settings'}"
    probe = f"import sys, vlmguard_plugins.cli; print(sorted({heavy} & set(sys.modules)))"
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            raise AssertionError(f"vlmguard serve exited early:\n{stderr}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("vlmguard serve did not become healthy")


@pytest.mark.slow  # a real `vlmguard serve` process on the tiny model: most of a minute
def test_serve_with_the_tiny_model_finishes_streams_in_flight_on_sigterm(
    tiny_model_dir: Path,
) -> None:
    pieces = [f"piece-{i} " for i in range(8)]
    upstream = ChatCompletionServer(chunks=pieces, chunk_delay_s=0.25, model="fake-vlm")
    with run_in_thread(upstream.app) as upstream_url:
        port = _free_port()
        env = {
            **os.environ,
            "VLMGUARD_GATEWAY_UPSTREAM_URL": f"{upstream_url}/v1",
            "VLMGUARD_GATEWAY_UPSTREAM_API_KEY": "sk-upstream",
            "VLMGUARD_GATEWAY_REWRITER_MAX_NEW_TOKENS": "4",
        }
        script = Path(sys.executable).parent / "vlmguard"
        command = [str(script), "serve", "--rewriter-model", str(tiny_model_dir)]
        command += ["--port", str(port), "--api-key", "client-key", "--log-level", "warning"]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            gateway_url = f"http://127.0.0.1:{port}"
            _wait_until_healthy(gateway_url, process)
            client = openai.OpenAI(
                base_url=f"{gateway_url}/v1", api_key="client-key", max_retries=0, timeout=60
            )
            stream = client.chat.completions.create(
                model="fake-vlm",
                messages=[{"role": "user", "content": "What is the quickest way to use this?"}],
                stream=True,
            )
            received = []
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        received.append(choice.delta.content)
                        if len(received) == 1:  # mid-stream: ask the gateway to stop
                            process.send_signal(signal.SIGTERM)
            assert received == pieces
            # uvicorn re-raises the signal once every request is done.
            assert process.wait(timeout=30) in (0, -signal.SIGTERM)
            assert process.stderr is not None
            assert "Traceback" not in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    (request,) = upstream.requests
    assert request.headers["authorization"] == "Bearer sk-upstream"
    # Random weights cannot follow the output contract: the shield policy acted.
    assert request.last_user_content == shield_prompt("What is the quickest way to use this?")
