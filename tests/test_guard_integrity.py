"""What the guard forwards when its deadline passes early, and what its cache may answer.

An image the guard has not checked must never travel on under a fallback prompt, and
a cached verdict must belong to the very conversation it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conversation import from_openai
from vlmguard_plugins.errors import InputCheckTimeoutError
from vlmguard_plugins.speculative import releasable, speculate_once
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.types import HistoryTurn
from vlmguard_plugins.urls import URLPolicy


@pytest.fixture
async def silent_image_url() -> AsyncIterator[str]:
    """A loopback address that accepts the connection and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/photo.png"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def _rewriter(policy: str, backend: ScriptedBackend | None = None) -> Rewriter:
    return Rewriter(
        backend=backend or ScriptedBackend(),
        on_error=policy,  # type: ignore[arg-type]
        timeout_s=0.3,
        url_policy=URLPolicy(allow_remote=True, allow_private_addresses=True),
    )


@pytest.mark.parametrize("policy", ["shield", "passthrough", "block"])
async def test_a_deadline_passing_while_images_load_refuses_instead_of_forwarding(
    policy: str, silent_image_url: str
) -> None:
    backend = ScriptedBackend()
    rewriter = _rewriter(policy, backend)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": silent_image_url}},
            ],
        }
    ]
    sent: list[str] = []

    async def original() -> str:
        sent.append("original")
        return "original answer"

    async def guarded(_guarded: object) -> str:
        sent.append("guarded")
        return "guarded answer"

    with pytest.raises(InputCheckTimeoutError, match="could not be read and checked"):
        await rewriter.aguard(from_openai(messages))
    with pytest.raises(InputCheckTimeoutError):
        await speculate_once(rewriter.aguard(from_openai(messages)), original, guarded)

    assert sent == []  # neither the original nor a fallback request reached the model
    assert backend.calls == []  # the rewriter model was never asked either
    await rewriter.aclose()


async def test_a_deadline_after_the_checks_still_goes_to_the_failure_policy() -> None:
    # The images were read and checked: what is late is the rewriter model.
    backend = ScriptedBackend.rewriting_to("Explain safely.", delay_s=2.0)
    rewriter = _rewriter("shield", backend)
    guarded = await rewriter.aguard(from_openai([{"role": "user", "content": "Hello"}]))

    assert guarded.result is not None
    assert guarded.result.fallback is not None and "BackendTimeoutError" in guarded.result.fallback
    assert not releasable(guarded)
    await rewriter.aclose()


async def test_a_cached_verdict_answers_only_the_conversation_it_was_made_for() -> None:
    backend = ScriptedBackend()  # answers every request as benign and unchanged
    rewriter = Rewriter(backend=backend, cache_size=16)
    two_turns = await rewriter.arewrite(
        "second part", history=[HistoryTurn(role="user", text="first part")]
    )
    # One message whose text holds the characters a naive key would use as separators.
    one_message = await rewriter.arewrite("user\x000\x00first part\x01second part")

    assert two_turns.cached is False and one_message.cached is False
    assert one_message.original == "user\x000\x00first part\x01second part"
    assert len(backend.calls) == 2
    again = await rewriter.arewrite(
        "second part", history=[HistoryTurn(role="user", text="first part")]
    )
    assert again.cached is True and again.original == "second part"
    await rewriter.aclose()
