"""Speculative mode: ``guard.speculative(vlm)`` holds the model's answer until the verdict."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_vlmguard import (
    REWRITE_EVENT,
    VLMGuardRewriter,
    VLMGuardSpeculativeChatModel,
    get_rewrite_result,
    speculative_outcome,
)
from pydantic import PrivateAttr

from vlmguard_plugins import Rewriter
from vlmguard_plugins.backends.base import Generation, GenerationRequest
from vlmguard_plugins.errors import UnsupportedContentError
from vlmguard_plugins.testing import ScriptedBackend

QUESTION = "How do I use this?"
ORIGINAL_ANSWER = "Grip the handle and press the blade down firmly."
GUARDED_ANSWER = "Keep your fingers clear and cut away from yourself."


def question(image_b64: str, *extra: dict[str, Any]) -> list[BaseMessage]:
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}"}}
    return [HumanMessage(content=[{"type": "text", "text": QUESTION}, image, *extra])]


def text_of(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return " ".join(b["text"] for b in message.content if isinstance(b, dict) and "text" in b)


def benign() -> VLMGuardRewriter:
    return VLMGuardRewriter(rewriter=Rewriter(ScriptedBackend()))  # unchanged, risk none


def fake_vlm(recorder: Any, *answers: str) -> GenericFakeChatModel:
    """LangChain's fake chat model, recording what it received through its own callbacks."""
    return GenericFakeChatModel(
        messages=iter([AIMessage(content=a) for a in answers]), callbacks=[recorder]
    )


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


class KeyedChatModel(BaseChatModel):
    """A VLM the test sequences: it answers the rewrite with ``guarded``, anything else with
    ``original``; it records what each call received, what it produced and its close."""

    original: list[str]
    """The pieces of the answer to the original messages."""
    guarded: list[str] = []
    """The pieces of the answer to messages carrying ``marker`` (the rewrite)."""
    marker: str = "Explain how to handle"
    hold: bool = False
    """Whether the original answer waits, after its first piece, until ``resume`` is set."""

    _received: dict[str, list[list[BaseMessage]]] = PrivateAttr(default_factory=dict)
    _produced: list[str] = PrivateAttr(default_factory=list)
    _events: dict[str, asyncio.Event] = PrivateAttr(default_factory=dict)

    def event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    def received(self, which: str) -> list[list[BaseMessage]]:
        return self._received.get(which, [])

    def _call(self, messages: list[BaseMessage]) -> str:
        which = "guarded" if self.marker in text_of(messages[-1]) else "original"
        self._received.setdefault(which, []).append(messages)
        return which

    @property
    def _llm_type(self) -> str:
        return "keyed-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(getattr(self, self._call(messages)))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        which = self._call(messages)
        self.event(f"first {which}").set()
        try:
            if which == "original" and self.hold:
                await self.event("resume").wait()
        finally:
            self.event(f"closed {which}").set()
        text = "".join(getattr(self, which))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in getattr(self, self._call(messages)):
            self._produced.append(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        which = self._call(messages)
        try:
            for index, piece in enumerate(getattr(self, which)):
                self._produced.append(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if index == 0:
                    self.event(f"first {which}").set()
                    if which == "original" and self.hold:
                        await self.event("resume").wait()
            self.event(f"finished {which}").set()
        finally:
            self.event(f"closed {which}").set()


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), timeout=10)


# -- one answer ---------------------------------------------------------------------------


async def test_a_benign_request_gets_the_original_answer_from_one_call(recorder, image_b64):
    vlm = fake_vlm(recorder, ORIGINAL_ANSWER)
    received = recorder.received
    model = benign().speculative(vlm)

    answer = await model.ainvoke(question(image_b64))

    assert answer.content == ORIGINAL_ANSWER
    assert speculative_outcome(answer) == "hit"
    assert answer.response_metadata["vlmguard"]["risk"] == "none"
    assert len(received) == 1
    assert received[0] == question(image_b64)
    assert model.stats.hits == 1 and model.stats.wasted_calls == 0


async def test_a_risky_request_gets_the_answer_to_the_rewrite_with_the_image_kept(
    backend, recorder, rewritten, image_b64
):
    vlm = KeyedChatModel(original=[ORIGINAL_ANSWER], guarded=[GUARDED_ANSWER], hold=True)
    gate = GatedBackend(backend)
    model = VLMGuardRewriter(rewriter=Rewriter(gate)).speculative(vlm)

    answer = asyncio.ensure_future(model.ainvoke(question(image_b64), {"callbacks": [recorder]}))
    await wait_for(vlm.event("first original"))  # the original call is under way
    gate.open.set()

    assert (await answer).content == GUARDED_ANSWER
    assert speculative_outcome(await answer) == "miss"
    assert (await answer).response_metadata["vlmguard"]["risk"] == "medium"
    assert get_rewrite_result(await answer).prompt == rewritten  # type: ignore[union-attr]
    await wait_for(vlm.event("closed original"))  # cancelled, never answered
    [original] = vlm.received("original")
    [second] = vlm.received("guarded")
    assert text_of(second[0]) == rewritten
    assert second[0].content[1] is original[0].content[1]  # the very same image block
    assert model.stats.misses == 1 and model.stats.wasted_calls == 1
    assert [name for name, _, _ in recorder.events] == [REWRITE_EVENT]
    assert [text_of(m[0]) for m in recorder.received] == [QUESTION]  # only this model's run


def test_invoke_is_speculative_too(guard, recorder, rewritten, image_b64):
    vlm = KeyedChatModel(original=[ORIGINAL_ANSWER], guarded=[GUARDED_ANSWER])
    risky = guard.speculative(vlm).invoke(question(image_b64))
    assert risky.content == GUARDED_ANSWER and speculative_outcome(risky) == "miss"
    assert text_of(vlm.received("guarded")[0][0]) == rewritten

    hit = benign().speculative(fake_vlm(recorder, ORIGINAL_ANSWER)).invoke(question(image_b64))
    assert hit.content == ORIGINAL_ANSWER and speculative_outcome(hit) == "hit"


def test_stream_is_speculative_too(guard, recorder, rewritten, image_b64):
    vlm = KeyedChatModel(original=["UNSAFE-1 ", "UNSAFE-2"], guarded=["Keep ", "clear."])
    chunks = list(guard.speculative(vlm).stream(question(image_b64)))
    assert "".join(str(c.content) for c in chunks) == "Keep clear."
    assert speculative_outcome(chunks[0]) == "miss"
    assert text_of(vlm.received("guarded")[0][0]) == rewritten

    hit = list(benign().speculative(fake_vlm(recorder, ORIGINAL_ANSWER)).stream(QUESTION))
    assert "".join(str(c.content) for c in hit) == ORIGINAL_ANSWER
    assert len(hit) > 2 and speculative_outcome(hit[0]) == "hit"


async def test_input_the_guard_cannot_check_cancels_the_call_and_raises(image_b64):
    vlm = KeyedChatModel(original=["Sure, ", "listen: ", "..."], hold=True)
    gate = GatedBackend(ScriptedBackend())
    model = VLMGuardSpeculativeChatModel(model=vlm, guard=Rewriter(gate))
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}

    async def consume() -> list[str]:
        return [str(chunk.content) async for chunk in model.astream(question(image_b64, audio))]

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("first original"))
    gate.open.set()
    with pytest.raises(UnsupportedContentError):
        await consumer
    await wait_for(vlm.event("closed original"))
    assert model.stats.wasted_calls == 1


# -- streaming ----------------------------------------------------------------------------


async def test_a_benign_stream_is_held_until_the_verdict_then_released_in_order(image_b64):
    pieces = ["Grip ", "the ", "handle."]
    vlm = KeyedChatModel(original=pieces)
    gate = GatedBackend(ScriptedBackend())
    model = VLMGuardRewriter(rewriter=Rewriter(gate)).speculative(vlm)
    received: list[AIMessageChunk] = []

    async def consume() -> None:
        async for chunk in model.astream(question(image_b64)):
            received.append(chunk)

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("finished original"))  # the whole answer exists, no verdict yet
    assert received == []
    gate.open.set()
    await consumer

    assert "".join(str(chunk.content) for chunk in received) == "Grip the handle."
    assert speculative_outcome(received[0]) == "hit"


async def test_a_risky_stream_never_shows_the_original_and_closes_its_stream(
    backend, rewritten, image_b64
):
    vlm = KeyedChatModel(
        original=["UNSAFE-1 ", "UNSAFE-2 "], guarded=["Keep ", "fingers ", "clear."], hold=True
    )
    gate = GatedBackend(backend)
    model = VLMGuardRewriter(rewriter=Rewriter(gate)).speculative(vlm)

    async def consume() -> list[AIMessageChunk]:
        return [chunk async for chunk in model.astream(question(image_b64))]

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("first original"))  # the original call is generating
    gate.open.set()
    received = await consumer

    text = "".join(str(chunk.content) for chunk in received)
    assert text == "Keep fingers clear."
    assert "UNSAFE" not in text
    await wait_for(vlm.event("closed original"))
    assert "UNSAFE-2 " not in vlm._produced  # the original stopped at the verdict
    assert text_of(vlm.received("guarded")[0][0]) == rewritten
    assert speculative_outcome(received[0]) == "miss"


async def test_stream_events_show_nothing_of_the_original_answer(backend, image_b64):
    vlm = KeyedChatModel(original=["UNSAFE-1 ", "UNSAFE-2 "], guarded=["Keep ", "clear."])
    gate = GatedBackend(backend)
    model = VLMGuardRewriter(rewriter=Rewriter(gate)).speculative(vlm)

    async def events() -> list[Any]:
        return [event async for event in model.astream_events(question(image_b64))]

    collected = asyncio.ensure_future(events())
    await wait_for(vlm.event("finished original"))
    gate.open.set()
    seen = await collected

    assert "UNSAFE" not in repr(seen)
    streamed = [e["data"]["chunk"].content for e in seen if e["event"] == "on_chat_model_stream"]
    assert "".join(streamed) == "Keep clear."


async def test_max_held_chunks_stops_reading_the_stream_until_the_verdict(image_b64):
    pieces = [f"{i} " for i in range(8)]
    vlm = KeyedChatModel(original=pieces)
    gate = GatedBackend(ScriptedBackend())
    model = VLMGuardSpeculativeChatModel(model=vlm, guard=Rewriter(gate), max_held_chunks=2)

    async def consume() -> str:
        return "".join([str(chunk.content) async for chunk in model.astream(question(image_b64))])

    consumer = asyncio.ensure_future(consume())
    await wait_for(vlm.event("first original"))
    for _ in range(50):  # ample turns of the loop for an unbounded reader to read all eight
        await asyncio.sleep(0)
    assert len(vlm._produced) <= 3  # two held, one at most in hand when the bound was hit
    gate.open.set()
    assert await consumer == "".join(pieces)


async def test_in_a_chain_after_a_prompt_template(guard, rewritten):
    vlm = KeyedChatModel(original=[ORIGINAL_ANSWER], guarded=[GUARDED_ANSWER])
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | guard.speculative(vlm)

    answer = await chain.ainvoke({"question": QUESTION})

    assert answer.content == GUARDED_ANSWER
    assert vlm.received("guarded")[0][0].content == rewritten


# -- a real OpenAI-compatible model over HTTP --------------------------------------------


class FirstToken(AsyncCallbackHandler):
    """Tells when a model's first streamed token arrived."""

    def __init__(self) -> None:
        self.first = asyncio.Event()

    async def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], **kwargs: Any
    ) -> None:
        self.first.set()


async def test_a_miss_closes_the_http_stream_of_the_original_call(backend, rewritten, image_b64):
    openai = pytest.importorskip("langchain_openai")
    from vlmguard_plugins.testing import ChatCompletionServer, HeldStream

    def answer(request: GenerationRequest) -> str:
        text = str(request.messages[-1]["content"])
        return GUARDED_ANSWER if rewritten in text else "UNSAFE " * 20

    streaming = FirstToken()
    with ChatCompletionServer(responder=answer) as server:
        # The original answer stops after its first piece until the test releases it, so
        # the verdict always comes while it is still being generated.
        server.inject(HeldStream(timeout_s=60))
        vlm = openai.ChatOpenAI(
            model="vlmguard-test",
            base_url=server.base_url,
            api_key="test",
            max_retries=0,
            callbacks=[streaming],
        )
        gate = GatedBackend(backend)
        model = VLMGuardRewriter(rewriter=Rewriter(gate)).speculative(vlm)

        async def consume() -> str:
            return "".join([str(c.content) async for c in model.astream(question(image_b64))])

        consumer = asyncio.ensure_future(consume())
        await wait_for(streaming.first)  # the original answer is streaming in
        gate.open.set()
        text = await consumer
        server.release.set()  # the server tries to send the rest: nobody is reading

        assert text == GUARDED_ANSWER
        deadline = time.monotonic() + 10
        while server.abandoned_streams == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.abandoned_streams == 1
        assert len(server.chat_requests) == 2
        assert server.chat_requests[1].text == rewritten
        assert len(server.chat_requests[1].image_urls) == 1
