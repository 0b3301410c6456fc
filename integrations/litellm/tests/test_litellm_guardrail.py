"""The guardrail as LiteLLM builds it from ``config.yaml``, and its hook called in process.

The guardrail is built by LiteLLM's own registry (``InMemoryGuardrailHandler``) from a
``litellm_params`` mapping, exactly as the proxy does at startup; the hook is then
called as the proxy calls it.  The end-to-end behaviour over HTTP is in
``test_litellm_proxy.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from litellm.proxy._types import UserAPIKeyAuth
from litellm.proxy.guardrails.guardrail_registry import InMemoryGuardrailHandler
from litellm.types.guardrails import LitellmParams
from litellm_vlmguard import (
    GuardrailRefusal,
    GuardrailSettings,
    GuardrailStartupError,
    VLMGuardGuardrail,
)

from vlmguard_plugins import Rewriter, Risk
from vlmguard_plugins.errors import BackendUnavailableError, ConfigurationError
from vlmguard_plugins.policy import SHIELD_INSTRUCTION
from vlmguard_plugins.telemetry import CAPTURE_CONTENT_ENV
from vlmguard_plugins.testing import ChatCompletionServer, ErrorStatus, ScriptedBackend

# LiteLLM wants the config's location (to find guardrail files beside it); the guardrail
# itself is imported by module path, so no file is read from there.
CONFIG_PATH = os.path.join(os.path.dirname(__file__), "config.yaml")


@pytest.fixture
def built() -> Iterator[list[VLMGuardGuardrail]]:
    """Guardrails built through LiteLLM's registry; removed from LiteLLM's callbacks after."""
    guardrails: list[VLMGuardGuardrail] = []
    yield guardrails
    for guardrail in guardrails:
        litellm.logging_callback_manager.remove_callback_from_all_lists(guardrail)


def build(built: list[VLMGuardGuardrail], **params: Any) -> VLMGuardGuardrail:
    handler = InMemoryGuardrailHandler()
    litellm_params = {"guardrail": "litellm_vlmguard.VLMGuardGuardrail", "mode": "pre_call"}
    litellm_params.update(params)
    callback = handler.initialize_custom_guardrail(
        guardrail={"guardrail_name": "vlmguard", "litellm_params": LitellmParams(**litellm_params)},
        guardrail_type=litellm_params["guardrail"],
        litellm_params=LitellmParams(**litellm_params),
        config_file_path=CONFIG_PATH,
    )
    assert isinstance(callback, VLMGuardGuardrail)
    built.append(callback)
    return callback


async def check(guardrail: VLMGuardGuardrail, data: dict[str, Any], call_type: str = "acompletion"):
    return await guardrail.async_pre_call_hook(
        user_api_key_dict=UserAPIKeyAuth(),
        cache=litellm.DualCache(),
        data=data,
        call_type=call_type,
    )


def request(text: str = "How do I use this?") -> dict[str, Any]:
    return {"model": "vlm", "messages": [{"role": "user", "content": text}]}


def test_litellm_builds_it_from_config_options(built: list[VLMGuardGuardrail]) -> None:
    guardrail = build(
        built,
        backend="scripted",
        on_error="block",
        timeout_s=7,
        max_images=3,
        block_risk="high",
        default_on=True,
    )

    assert guardrail.guardrail_name == "vlmguard"
    assert guardrail.default_on is True
    assert guardrail.settings.on_error == "block"
    assert guardrail.settings.block_risk is Risk.HIGH
    assert guardrail.rewriter.timeout_s == 7
    assert guardrail.rewriter.image_limits.max_images == 3


def test_litellm_names_stand_for_the_core_settings(
    built: list[VLMGuardGuardrail], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLMGUARD_TEST_KEY", "from-the-environment")

    guardrail = build(
        built,
        backend="openai",
        model="vlmguard-r1",
        api_base="http://127.0.0.1:9/v1",
        api_key="os.environ/VLMGUARD_TEST_KEY",
        timeout=4,
    )

    assert guardrail.settings.base_url == "http://127.0.0.1:9/v1"
    assert guardrail.settings.api_key is not None
    assert guardrail.settings.api_key.get_secret_value() == "from-the-environment"
    assert guardrail.settings.timeout_s == 4


def test_an_unknown_option_is_named(built: list[VLMGuardGuardrail]) -> None:
    with pytest.raises(GuardrailStartupError, match="unknown option timeout_seconds") as error:
        build(built, backend="scripted", timeout_seconds=3)
    assert isinstance(error.value.__cause__, ConfigurationError)


def test_an_invalid_value_is_named(built: list[VLMGuardGuardrail]) -> None:
    with pytest.raises(GuardrailStartupError, match="on_error"):
        build(built, backend="scripted", on_error="ignore")


def test_a_block_risk_of_none_is_refused_at_config_time(built: list[VLMGuardGuardrail]) -> None:
    # Every verdict is at least "none": it would refuse every request.
    with pytest.raises(GuardrailStartupError, match="block_risk: 'none' would refuse every"):
        build(built, backend="scripted", block_risk="none")
    with pytest.raises(ConfigurationError, match="block_risk"):
        GuardrailSettings.from_litellm_params({"backend": "scripted", "block_risk": "none"})


def test_a_startup_error_is_not_one_litellm_would_skip(built: list[VLMGuardGuardrail]) -> None:
    # LiteLLM starts the proxy without a guardrail whose constructor raises ValueError or
    # TypeError: the requests would reach the model unguarded.
    with pytest.raises(GuardrailStartupError) as error:
        build(built, backend="scripted", block_risk="none")
    assert not isinstance(error.value, (ValueError, TypeError))


def test_an_unset_environment_variable_is_named() -> None:
    with pytest.raises(ConfigurationError, match="VLMGUARD_UNSET_VARIABLE"):
        GuardrailSettings.from_litellm_params(
            {"backend": "scripted", "base_url": "os.environ/VLMGUARD_UNSET_VARIABLE"}
        )


@pytest.mark.parametrize("flag", ["run_in_parallel", "scan_raw_request"])
def test_options_that_would_discard_the_rewrite_are_refused(
    built: list[VLMGuardGuardrail], flag: str
) -> None:
    with pytest.raises(GuardrailStartupError, match=flag):
        build(built, backend="scripted", **{flag: True})


@pytest.mark.parametrize("mode", ["during_call", "post_call"])
def test_only_pre_call_can_rewrite(built: list[VLMGuardGuardrail], mode: str) -> None:
    with pytest.raises(GuardrailStartupError, match=mode):
        build(built, backend="scripted", mode=mode)


async def test_the_rewrite_replaces_the_user_text() -> None:
    backend = ScriptedBackend.rewriting_to("Describe safe handling of this knife.")
    guardrail = VLMGuardGuardrail(Rewriter(backend), settings=GuardrailSettings(backend="scripted"))

    data = await check(guardrail, request())

    assert data["messages"] == [
        {"role": "user", "content": "Describe safe handling of this knife."}
    ]
    assert backend.calls[0].user_text == "How do I use this?"


async def test_the_verdict_is_recorded_for_the_proxy_logs_without_the_prompt() -> None:
    backend = ScriptedBackend.rewriting_to("Describe safe handling.", risk="medium")
    guardrail = VLMGuardGuardrail(Rewriter(backend), settings=GuardrailSettings(backend="scripted"))

    data = await check(guardrail, request("a secret question"))

    (record,) = data["metadata"]["standard_logging_guardrail_information"]
    assert record["guardrail_response"] == {
        "risk": "medium",
        "action": "rewrite",
        "changed": True,
    }
    assert record["guardrail_status"] == "guardrail_intervened"
    assert "a secret question" not in str(record["guardrail_response"])


async def test_a_failure_under_shield_forwards_the_shielded_text_not_a_verdict() -> None:
    backend = ScriptedBackend([BackendUnavailableError("down")])
    guardrail = VLMGuardGuardrail(
        Rewriter(backend, on_error="shield"), settings=GuardrailSettings(backend="scripted")
    )

    data = await check(guardrail, request("What is this?"))

    forwarded = data["messages"][0]["content"]
    assert forwarded.startswith(SHIELD_INSTRUCTION) and forwarded.endswith("What is this?")
    record = data["metadata"]["standard_logging_guardrail_information"][0]
    assert record["guardrail_response"]["risk"] == "unknown"
    assert record["guardrail_response"]["fallback"] == "BackendUnavailableError"


SECRET_TEXT = "SECRETUSERTEXT"


@pytest.mark.parametrize("capture", [False, True])
async def test_an_error_that_quotes_the_request_is_logged_only_with_capture(
    built: list[VLMGuardGuardrail],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capture: bool,
) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    server = ChatCompletionServer(model="vlmguard-r1")
    server.inject(ErrorStatus(400, f"invalid request: input '{SECRET_TEXT}' rejected"), times=None)
    with server:
        guardrail = build(
            built,
            backend="openai",
            model="vlmguard-r1",
            api_base=server.base_url,
            api_key="unused",
            capture_message_content=capture,
        )
        with caplog.at_level(logging.INFO, logger="litellm_vlmguard"):
            data = await check(guardrail, request(f"How do I {SECRET_TEXT}?"))
        await guardrail.aclose()

    (record,) = data["metadata"]["standard_logging_guardrail_information"]
    fallback = record["guardrail_response"]["fallback"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "litellm_vlmguard"]
    assert warnings == [f"failure policy 'shield' answered: {fallback}"]
    if capture:
        assert fallback.startswith("BackendError: ") and SECRET_TEXT in fallback
    else:
        assert fallback == "BackendError"
        assert SECRET_TEXT not in str(record)


async def test_a_failure_under_raise_is_a_503_not_an_intervention() -> None:
    backend = ScriptedBackend([BackendUnavailableError("down")])
    guardrail = VLMGuardGuardrail(
        Rewriter(backend, on_error="raise"), settings=GuardrailSettings(backend="scripted")
    )

    with pytest.raises(GuardrailRefusal) as refused:
        await check(guardrail, request())

    assert refused.value.status_code == 503
    assert refused.value.code == "guard_unavailable"


async def test_a_conversation_without_a_user_message_is_refused() -> None:
    guardrail = VLMGuardGuardrail(
        Rewriter(ScriptedBackend()), settings=GuardrailSettings(backend="scripted")
    )
    data = {"model": "vlm", "messages": [{"role": "system", "content": "Be brief."}]}

    with pytest.raises(GuardrailRefusal) as refused:
        await check(guardrail, data)

    assert refused.value.status_code == 400


async def test_other_call_types_are_refused_unless_allowed() -> None:
    backend = ScriptedBackend()
    refusing = VLMGuardGuardrail(Rewriter(backend), settings=GuardrailSettings(backend="scripted"))
    allowing = VLMGuardGuardrail(
        Rewriter(backend),
        settings=GuardrailSettings(backend="scripted", allow_call_types=["aembedding"]),
    )
    data = {"model": "embedder", "input": ["some text"]}

    with pytest.raises(GuardrailRefusal) as refused:
        await check(refusing, dict(data), call_type="aresponses")
    assert refused.value.code == "unsupported_call_type"
    passed = await check(allowing, dict(data), call_type="aembedding")
    assert (passed["model"], passed["input"]) == ("embedder", ["some text"])
    assert backend.calls == []
