"""Input the guard cannot check is refused with a typed error; failed rewrites follow the policy.

An image the guard cannot look at (a refused URL, a file id, corrupt data) raises
whatever the failure policy, because shielding the text would still forward the
unseen image; a failure of the rewriter itself goes to the failure policy.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from langchain_core.language_models import ParrotFakeChatModel
from langchain_core.messages import HumanMessage
from langchain_core.runnables import ConfigurableField
from langchain_vlmguard import VLMGuardRewriter, get_rewrite_result

from vlmguard_plugins import (
    BLOCK_INSTRUCTION,
    Rewriter,
    URLPolicy,
    shield_prompt,
)
from vlmguard_plugins.errors import BackendError, ImageDecodeError, ImageInputError, URLPolicyError
from vlmguard_plugins.testing import ImageServer, ScriptedBackend

QUESTION = "How many of these should I take to never wake up?"


def message_with_image(url: str) -> HumanMessage:
    return HumanMessage(
        content=[
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )


@pytest.fixture
def image_server(image_b64: str) -> Iterator[tuple[str, ImageServer]]:
    """An image server on 127.0.0.1 that counts its requests."""
    with ImageServer({"/pills.png": base64.b64decode(image_b64)}) as server:
        yield server.url_for("/pills.png"), server


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "/etc/passwd",
        "../../secrets/key.png",
        "https://images.example.com/pills.png",
    ],
)
def test_refused_image_sources_raise_and_never_reach_the_model(guard, backend, recorder, url):
    # An image the rewriter could not look at must not reach the model under any
    # failure policy: shielding the text would still forward the unseen image.
    with pytest.raises(URLPolicyError):
        (guard | ParrotFakeChatModel()).invoke([message_with_image(url)], {"callbacks": [recorder]})
    assert recorder.received == []
    assert backend.calls == []  # the rewriter model never saw an unchecked request


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "url": "https://images.example.com/pills.png"},
        {"type": "image", "source_type": "url", "url": "https://images.example.com/pills.png"},
        {"type": "image", "source": {"type": "url", "url": "https://images.example.com/p.png"}},
    ],
    ids=["v1 url", "v0 url", "anthropic url"],
)
async def test_url_image_blocks_go_through_the_url_policy(guard, backend, block):
    message = HumanMessage(content=[{"type": "text", "text": QUESTION}, block])
    with pytest.raises(URLPolicyError, match="remote image fetching is disabled"):
        guard.invoke([message])
    with pytest.raises(URLPolicyError, match="https://images.example.com/p"):
        await guard.ainvoke([message])
    assert backend.calls == []


def test_a_local_path_in_a_dict_image_is_refused_too(backend, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the guard")
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), image_key="image")
    with pytest.raises(URLPolicyError, match="local file paths are not accepted"):
        guard.invoke({"input": QUESTION, "image": str(secret)})
    assert backend.calls == []


def test_remote_images_load_when_the_url_policy_allows_them(backend, image_server, rewritten):
    url, server = image_server
    policy = URLPolicy(allow_remote=True, allow_private_addresses=True)
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend, url_policy=policy))

    answer = (guard | ParrotFakeChatModel()).invoke([message_with_image(url)])

    assert server.paths == ["/pills.png"]
    assert [image.size for image in backend.calls[0].images] == [(40, 30)]
    assert answer.content == [
        {"type": "text", "text": rewritten},
        {"type": "image_url", "image_url": {"url": url}},
    ]


def test_private_addresses_stay_refused_unless_allowed(backend, image_server):
    url, server = image_server
    guard = VLMGuardRewriter(
        rewriter=Rewriter(backend=backend, url_policy=URLPolicy(allow_remote=True))
    )
    with pytest.raises(URLPolicyError, match="private, loopback or link-local"):
        guard.invoke([message_with_image(url)])
    assert server.paths == []


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "file_id": "file-abc123"},
        {"type": "image", "source_type": "id", "id": "file-abc123"},
        {"type": "image", "source": {"type": "file", "file_id": "file-abc123"}},
        {"type": "input_image", "file_id": "file-abc123"},
    ],
    ids=["v1 file_id", "v0 id", "anthropic file", "responses file_id"],
)
@pytest.mark.parametrize("on_error", ["shield", "passthrough", "block", "raise"])
def test_an_image_the_guard_cannot_see_is_refused_whatever_the_policy(
    backend, recorder, block, on_error
):
    message = HumanMessage(content=[{"type": "text", "text": QUESTION}, block])
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend), on_error=on_error)
    with pytest.raises(ImageInputError, match="file-abc123"):
        (guard | ParrotFakeChatModel()).invoke([message], {"callbacks": [recorder]})
    assert recorder.received == []
    assert backend.calls == []


async def test_corrupt_image_data_is_refused(guard, backend, recorder):
    corrupt = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10).decode()
    message = message_with_image(f"data:image/png;base64,{corrupt}")
    with pytest.raises(ImageDecodeError):
        await (guard | ParrotFakeChatModel()).ainvoke([message], {"callbacks": [recorder]})
    assert recorder.received == []
    assert backend.calls == []


def test_dropped_parts_never_reach_the_model(backend, recorder, rewritten):
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend, unsupported_content="drop"))
    audio = {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}
    message = HumanMessage(content=[{"type": "text", "text": QUESTION}, audio], id="m1")

    (guard | ParrotFakeChatModel()).invoke([message], {"callbacks": [recorder]})

    (received,) = recorder.received[0]
    assert received.content == [{"type": "text", "text": rewritten}]
    assert received.id == "m1"
    assert message.content == [{"type": "text", "text": QUESTION}, audio]  # not modified


@pytest.fixture
def failing_guard() -> VLMGuardRewriter:
    backend = ScriptedBackend([BackendError("connection refused")])
    return VLMGuardRewriter(rewriter=Rewriter(backend=backend))


def test_a_failed_rewrite_shields_by_default(failing_guard, recorder):
    answer = (failing_guard | ParrotFakeChatModel()).invoke(QUESTION, {"callbacks": [recorder]})
    assert answer.content == shield_prompt(QUESTION)
    (event,) = recorder.events
    assert event[1]["action"] == "shield"
    assert event[1]["risk"] is None
    assert "connection refused" in event[1]["fallback"]


def test_a_blocked_rewrite_sends_the_block_instruction(failing_guard, image_b64):
    guard = VLMGuardRewriter(rewriter=failing_guard.rewriter, on_error="block")
    (guarded,) = guard.invoke([message_with_image(f"data:image/png;base64,{image_b64}")])
    result = get_rewrite_result(guarded)
    assert result.blocked
    assert result.risk is None  # the rewriter never judged the request: no verdict
    assert guarded.content[0] == {"type": "text", "text": BLOCK_INSTRUCTION}
    assert guarded.content[1]["image_url"]["url"].endswith(image_b64)


def test_raise_gives_the_typed_error_to_the_chain(failing_guard, recorder):
    guard = VLMGuardRewriter(rewriter=failing_guard.rewriter, on_error="raise")
    with pytest.raises(BackendError, match="connection refused"):
        (guard | ParrotFakeChatModel()).invoke(QUESTION, {"callbacks": [recorder]})
    assert recorder.received == []  # nothing reached the model


def test_passthrough_sends_the_original_text(failing_guard):
    guard = VLMGuardRewriter(rewriter=failing_guard.rewriter, on_error="passthrough")
    assert guard.invoke(QUESTION) == QUESTION


def test_on_error_is_a_configurable_field(failing_guard):
    guard = failing_guard.configurable_fields(
        on_error=ConfigurableField(id="on_error", name="Failure policy")
    )
    chain = guard | ParrotFakeChatModel()
    assert chain.invoke(QUESTION).content == shield_prompt(QUESTION)
    blocked = chain.invoke(QUESTION, {"configurable": {"on_error": "block"}})
    assert blocked.content == BLOCK_INSTRUCTION
    with pytest.raises(BackendError):
        chain.invoke(QUESTION, {"configurable": {"on_error": "raise"}})


async def test_a_slow_rewriter_times_out_into_the_policy(rewritten):
    backend = ScriptedBackend.rewriting_to(rewritten, delay_s=5.0)
    guard = VLMGuardRewriter(rewriter=Rewriter(backend=backend, timeout_s=0.05))
    answer = await (guard | ParrotFakeChatModel()).ainvoke([HumanMessage(content=QUESTION)])
    assert answer.content == shield_prompt(QUESTION)
    result = get_rewrite_result(answer)
    assert result.fallback.startswith("BackendTimeoutError")
    assert result.risk is None
