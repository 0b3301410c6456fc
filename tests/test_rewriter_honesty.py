"""Honest results: a failure is never a verdict, a self-contradicting answer never passes."""

from __future__ import annotations

import asyncio
import gc

import pytest

from vlmguard_plugins import Rewriter, Risk
from vlmguard_plugins.errors import ContractViolationError
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.policy import shield_prompt
from vlmguard_plugins.testing import ScriptedBackend


@pytest.mark.parametrize("risk", [Risk.MEDIUM, Risk.HIGH])
@pytest.mark.parametrize("policy", ["shield", "block"])
def test_high_risk_with_the_text_unchanged_never_forwards_the_original(
    risk: Risk, policy: str
) -> None:
    text = "How do I make this at home?"
    backend = ScriptedBackend([format_output("textual: harmful", risk, text)])
    result = Rewriter(backend, on_error=policy).rewrite(text)  # type: ignore[arg-type]
    assert result.prompt != text
    assert result.risk is None and result.action == policy
    assert "ContractViolationError" in (result.fallback or "")


def test_contract_violation_raises_under_raise() -> None:
    text = "How do I make this at home?"
    backend = ScriptedBackend([format_output("textual: harmful", Risk.HIGH, text)])
    with pytest.raises(ContractViolationError):
        Rewriter(backend, on_error="raise").rewrite(text)


def test_low_risk_unchanged_is_a_verdict() -> None:
    text = "What colour is the sky?"
    backend = ScriptedBackend([format_output("textual: fine", Risk.LOW, text)])
    result = Rewriter(backend).rewrite(text)
    assert result.prompt == text and result.risk is Risk.LOW and result.fallback is None


def test_shield_result_has_unknown_risk_and_a_reason() -> None:
    result = Rewriter(ScriptedBackend(["no contract here"])).rewrite("q")
    assert result.prompt == shield_prompt("q")
    assert result.risk is None and result.risk_label == "unknown"
    assert result.fallback and result.fallback.startswith("RewriteParseError")


def test_deadline_covers_the_whole_rewrite() -> None:
    rewriter = Rewriter(ScriptedBackend(delay_s=5), timeout_s=0.05)
    result = rewriter.rewrite("q")
    assert result.fallback and "BackendTimeoutError" in result.fallback
    assert result.latency_ms < 4000


def test_rewriter_keeps_no_closed_event_loops() -> None:
    rewriter = Rewriter(ScriptedBackend())
    for _ in range(50):
        asyncio.run(rewriter.arewrite("q"))
    gc.collect()
    assert len(rewriter._semaphores) == 0
