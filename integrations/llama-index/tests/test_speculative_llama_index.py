"""Speculative mode: ``VLMGuardLLM(speculative=True)`` holds the LLM's answer until the verdict."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms.mock import MockLLM, MockLLMWithChatMemoryOfLastCall
from llama_index_vlmguard import VLMGuardLLM, speculative_outcome
from PIL import Image
from pydantic import PrivateAttr

from vlmguard_plugins import Rewriter
from vlmguard_plugins.backends.base import Generation, GenerationRequest
from vlmguard_plugins.errors import ImageInputError, UnsupportedContentError
from vlmguard_plugins.images import ImageLimits
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.testing.late_checks import LateChecks

QUESTION = "How many of these should I take at once?"
REWRITE = "What is the safe dose of this medicine, and when should I ask a pharmacist?"
ORIGINAL = ["Take ", "as many ", "as you like."]
GUARDED = ["Follow ", "the label; ", "ask a pharmacist."]


def risky_backend() -> ScriptedBackend:
    return ScriptedBackend.rewriting_to(REWRITE, risk="high")


class GatedBackend:
    """A rewriter model that answers only when the test opens the gate."""

    name = "gated"

    def __init__(self, inner: ScriptedBackend) -> None:
        self.inner = inner
        self.open = asyncio.Event()

    async def agenerate(self, request: GenerationRequest) -> Generation:
        await self.open.wait()
        return await self.inner.agenerate(request)

    async def aclose(self) -> None:
        pass


class KeyedLLM(MockLLM):
    """A chat VLM the test sequences: the rewrite gets ``GUARDED``, anything else
    ``ORIGINAL``; it records what each call received, what it produced and its close."""

    _received: dict[str, list[list[ChatMessage]]] = PrivateAttr(default_factory=dict)
    _produced: list[str] = PrivateAttr(default_factory=list)
    _events: dict[str, asyncio.Event] = PrivateAttr(default_factory=dict)
    _hold: bool = PrivateAttr(default=False)

    def __init__(self, *, hold: bool = False) -> None:
        """``hold``: the original answer waits, after its first piece, for ``resume``."""
        super().__init__(max_tokens=None)
        self._hold = hold

    @classmethod
    def class_name(cls) -> str:
        return "KeyedLLM"

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def received(self, which: str) -> list[list[ChatMessage]]:
        return self._received.get(which, [])

    def _call(self, messages: Sequence[ChatMessage]) -> tuple[str, list[str]]:
        which = "guarded" if REWRITE in (messages[-1].content or "") else "original"
        self._received.setdefault(which, []).append(list(messages))
        return which, GUARDED if which == "guarded" else ORIGINAL

    @staticmethod
    def _response(text: str, delta: str | None = None) -> ChatResponse:
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta
        )

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._response("".join(self._call(messages)[1]))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        pieces = self._call(messages)[1]

        def stream() -> ChatResponseGen:
            text = ""
            for piece in pieces:
                self._produced.append(piece)
                text += piece
                yield self._response(text, piece)

        return stream()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        which, pieces = self._call(messages)
        self.event(f"first {which}").set()
        try:
            if which == "original" and self._hold:
                await self.event("resume").wait()
        finally:
            self.event(f"closed {which}").set()
        return self._response("".join(pieces))

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        which, pieces = self._call(messages)

        async def stream() -> ChatResponseAsyncGen:
            text = ""
            try:
                for index, piece in enumerate(pieces):
                    self._produced.append(piece)
                    text += piece
                    if index == 0:
                        self.event(f"first {which}").set()
                    yield self._response(text, piece)
                    if index == 0 and which == "original" and self._hold:
                        await self.event("resume").wait()
                self.event(f"finished {which}").set()
            finally:
                self.event(f"closed {which}").set()

        return stream()


def question(png_bytes: bytes, *extra: Any) -> list[ChatMessage]:
    image = ImageBlock(image=png_bytes, image_mimetype="image/png")
    return [ChatMessage(role="user", blocks=[image, TextBlock(text=QUESTION), *extra])]


def speculative(llm: Any, backend: Any, **kwargs: Any) -> VLMGuardLLM:
    return VLMGuardLLM(llm=llm, rewriter=Rewriter(backend), speculative=True, **kwargs)


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), timeout=10)


# -- one answer ---------------------------------------------------------------------------


async def test_a_benign_request_gets_the_original_answer_from_one_call(png_bytes):
    vlm = MockLLMWithChatMemoryOfLastCall(max_tokens=None, is_chat_model=True)
    guarded = speculative(vlm, ScriptedBackend())  # unchanged, risk none

    response = await guarded.achat(question(png_bytes))

    assert QUESTION in (response.message.content or "")
    assert speculative_outcome(response) == "hit"
    assert response.additional_kwargs["vlmguard"]["risk"] == "none"
    assert vlm.last_chat_messages == question(png_bytes)
    assert guarded.speculation_stats.hits == 1


async def test_a_risky_request_gets_the_answer_to_the_rewrite_with_the_image_kept(png_bytes):
    vlm = KeyedLLM(hold=True)
    gate = GatedBackend(risky_backend())
    guarded = speculative(vlm, gate)
    messages = question(png_bytes)

    answer = asyncio.ensure_future(guarded.achat(messages))
    await wait_for(vlm.event("first original"))  # the original call is under way
    gate.open.set()
    response = await answer

    assert response.message.content == "".join(GUARDED)
    assert speculative_outcome(response) == "miss"
    await wait_for(vlm.event("closed original"))  # cancelled, never answered
    [sent] = vlm.received("guarded")
    assert sent[-1].blocks[0] is messages[0].blocks[0]  # the very same image block
    assert sent[-1].content == REWRITE
    assert guarded.speculation_stats.misses == 1
    assert guarded.speculation_stats.wasted_calls == 1


def test_chat_and_stream_chat_are_speculative_too(png_bytes):
    vlm = KeyedLLM()
    guarded = speculative(vlm, risky_backend())
    assert guarded.chat(question(png_bytes)).message.content == "".join(GUARDED)
    streamed = list(guarded.stream_chat(question(png_bytes)))
    assert "".join(r.delta or "" for r in streamed) == "".join(GUARDED)
    assert [speculative_outcome(r) for r in streamed] == ["miss"] * len(GUARDED)
    assert [m[-1].content for m in vlm.received("guarded")] == [REWRITE, REWRITE]

    benign = speculative(KeyedLLM(), ScriptedBackend())
    streamed = list(benign.stream_chat(question(png_bytes)))
    assert [r.delta for r in streamed] == ORIGINAL
    assert speculative_outcome(streamed[-1]) == "hit"


def truncated_png() -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(buffer, "PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a valid header, half the pixels


REFUSED: dict[str, tuple[Any, ImageLimits | None, type[Exception]]] = {
    "truncated image": (
        lambda: ImageBlock(image=truncated_png(), image_mimetype="image/png"),
        None,
        ImageInputError,
    ),
    "image over the pixel limit": (None, ImageLimits(max_pixels=500), ImageInputError),
    "link-local URL": (
        lambda: ImageBlock(url="http://169.254.169.254/latest/meta-data/iam/x.png"),
        None,
        ImageInputError,
    ),
    "unsupported part": (
        lambda: {"block_type": "audio", "audio": b"RIFF", "format": "wav"},
        None,
        UnsupportedContentError,
    ),
}
"""Input the guard refuses: an extra block (beside a 40x30 image), the limits, the error."""


async def _drain(stream: ChatResponseAsyncGen) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize("call", ["achat", "astream_chat", "chat", "stream_chat"])
@pytest.mark.parametrize("case", list(REFUSED))
async def test_input_the_guard_refuses_reaches_no_llm(case, call, png_bytes):
    block, limits, error = REFUSED[case]
    messages = question(png_bytes, *([block()] if block else []))
    llm = KeyedLLM()
    enforced = VLMGuardLLM(
        llm=llm, rewriter=LateChecks(lambda: bool(llm.received("original")), limits)
    )
    guarded = VLMGuardLLM(
        llm=llm,
        rewriter=LateChecks(lambda: bool(llm.received("original")), limits),
        speculative=True,
    )

    with pytest.raises(error) as refused:
        await enforced.achat(messages)
    with pytest.raises(error) as speculative_refusal:
        if call == "achat":
            await guarded.achat(messages)
        elif call == "astream_chat":
            await _drain(await guarded.astream_chat(messages))
        elif call == "chat":
            await asyncio.to_thread(guarded.chat, messages)
        else:
            await asyncio.to_thread(lambda: list(guarded.stream_chat(messages)))

    assert str(speculative_refusal.value) == str(refused.value)
    assert llm.received("original") == [] and llm.received("guarded") == []
    assert guarded.speculation_stats.wasted_calls == 0


# -- streaming ----------------------------------------------------------------------------


async def test_a_benign_stream_is_held_until_the_verdict_then_released_in_order(png_bytes):
    vlm = KeyedLLM()
    gate = GatedBackend(ScriptedBackend())
    guarded = speculative(vlm, gate)
    received: list[ChatResponse] = []

    async def consume() -> None:
        async for response in await guarded.astream_chat(question(png_bytes)):
            received.append(response)

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("finished original"))  # the whole answer exists, no verdict yet
    assert received == []
    gate.open.set()
    await consumer

    assert [r.delta for r in received] == ORIGINAL
    assert received[-1].message.content == "".join(ORIGINAL)
    assert speculative_outcome(received[-1]) == "hit"


async def test_a_risky_stream_never_shows_the_original_and_closes_its_stream(png_bytes):
    vlm = KeyedLLM(hold=True)
    gate = GatedBackend(risky_backend())
    guarded = speculative(vlm, gate)

    async def consume() -> list[ChatResponse]:
        return [r async for r in await guarded.astream_chat(question(png_bytes))]

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("first original"))  # the original answer is streaming
    gate.open.set()
    received = await consumer

    assert "".join(r.delta or "" for r in received) == "".join(GUARDED)
    assert not any("as you like" in (r.message.content or "") for r in received)
    await wait_for(vlm.event("closed original"))
    assert vlm._produced.count("as many ") == 0  # the original stopped at the verdict
    assert vlm.received("guarded")[0][-1].content == REWRITE


async def test_max_held_chunks_stops_reading_the_stream_until_the_verdict(png_bytes):
    vlm = KeyedLLM()
    gate = GatedBackend(ScriptedBackend())
    guarded = speculative(vlm, gate, max_held_chunks=1)

    async def consume() -> list[str]:
        return [r.delta or "" async for r in await guarded.astream_chat(question(png_bytes))]

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("first original"))
    for _ in range(50):  # ample turns of the loop for an unbounded reader to read all three
        await asyncio.sleep(0)
    assert len(vlm._produced) <= 2  # one held, one at most in hand when the bound was hit
    gate.open.set()
    assert await consumer == ORIGINAL


async def test_a_chat_engine_over_the_speculative_llm(png_bytes):
    vlm = KeyedLLM()
    engine = SimpleChatEngine.from_defaults(llm=speculative(vlm, risky_backend()))

    response = await engine.achat(QUESTION)

    assert response.response == "".join(GUARDED)
    assert vlm.received("guarded")[0][-1].content == REWRITE
