"""Speculative mode: ``guard.speculative(vlm)`` holds the model's answer until the verdict."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langchain_vlmguard import (
    REWRITE_EVENT,
    VLMGuardRewriter,
    VLMGuardSpeculativeChatModel,
    get_rewrite_result,
    speculative_outcome,
)
from PIL import Image
from pydantic import PrivateAttr

from vlmguard_plugins import Rewriter
from vlmguard_plugins.backends.base import Generation, GenerationRequest
from vlmguard_plugins.errors import ImageInputError, UnsupportedContentError
from vlmguard_plugins.images import ImageLimits
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.testing.late_checks import LateChecks

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

    # The methods keep BaseChatModel's own signatures (as the adapter's and perf's models do).

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
    vlm = KeyedChatModel(original=[ORIGINAL_ANSWER])
    model = benign().speculative(vlm)

    answer = await model.ainvoke(question(image_b64), {"callbacks": [recorder]})

    assert answer.content == ORIGINAL_ANSWER
    assert speculative_outcome(answer) == "hit"
    assert answer.response_metadata["vlmguard"]["risk"] == "none"
    assert vlm.received("original") == [question(image_b64)]
    assert vlm.received("guarded") == []
    assert recorder.received == [question(image_b64)]  # this model's run only
    assert model.stats.hits == 1 and model.stats.wasted_calls == 0


class HeldUntil:
    """A rewriter model that answers once ``event`` is set (from any thread)."""

    name = "held"

    def __init__(self, inner: ScriptedBackend, event: threading.Event) -> None:
        self.inner = inner
        self.event = event

    async def agenerate(self, request: GenerationRequest) -> Generation:
        for _ in range(1000):
            if self.event.is_set():
                break
            await asyncio.sleep(0.005)
        return await self.inner.agenerate(request)

    async def aclose(self) -> None:
        pass


class TokenRecorder(BaseCallbackHandler):
    """A handler set on the wrapped model itself: every token and answer it is told of."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.seen.append(token)

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.seen.extend(g.text for gs in response.generations for g in gs)


@pytest.mark.parametrize("call", ["ainvoke", "astream", "invoke", "stream"])
async def test_handlers_on_the_wrapped_model_never_see_the_speculative_answer(
    call, backend, image_b64
):
    own = TokenRecorder()
    caller = TokenRecorder()
    asked = threading.Event()

    def answers() -> Iterator[AIMessage]:
        asked.set()  # the speculative call has begun: now the verdict may come
        yield AIMessage(content=ORIGINAL_ANSWER)
        yield AIMessage(content=GUARDED_ANSWER)

    vlm = GenericFakeChatModel(messages=answers(), callbacks=[own], verbose=True)
    model = VLMGuardRewriter(rewriter=Rewriter(HeldUntil(backend, asked))).speculative(vlm)
    config: RunnableConfig = {"callbacks": [caller]}
    if call == "ainvoke":
        answer = str((await model.ainvoke(question(image_b64), config)).content)
    elif call == "astream":
        answer = "".join([str(c.content) async for c in model.astream(question(image_b64), config)])
    elif call == "invoke":
        answer = str(model.invoke(question(image_b64), config).content)
    else:
        answer = "".join(str(c.content) for c in model.stream(question(image_b64), config))

    assert answer == GUARDED_ANSWER
    assert "Grip" not in "".join(own.seen) and "Grip" not in "".join(caller.seen)
    assert GUARDED_ANSWER in "".join(caller.seen).replace("  ", " ")


async def test_on_a_hit_the_released_answer_is_reported_by_the_wrappers_run(image_b64):
    own = TokenRecorder()
    caller = TokenRecorder()
    vlm = GenericFakeChatModel(messages=iter([AIMessage(content=ORIGINAL_ANSWER)]), callbacks=[own])
    chunks = [
        str(c.content)
        async for c in benign()
        .speculative(vlm)
        .astream(question(image_b64), {"callbacks": [caller]})
    ]
    assert "".join(chunks) == ORIGINAL_ANSWER
    assert own.seen == []  # the speculative call ran on a copy without the model's handlers
    assert "".join(caller.seen[: len(chunks)]) == ORIGINAL_ANSWER


def test_a_runnable_that_is_not_a_chat_model_is_refused_with_what_to_pass(guard):
    vlm = GenericFakeChatModel(messages=iter([AIMessage(content="ok")]))
    for wrapped in (vlm.bind(stop=["."]), vlm.with_retry()):
        with pytest.raises(TypeError, match=r"guard\.speculative\(model\)\.bind"):
            guard.speculative(wrapped)  # type: ignore[arg-type]
    bound = benign().speculative(vlm).bind(stop=["."])  # arguments bound on the result
    assert bound.invoke(QUESTION).content == "ok"


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


def truncated_png() -> str:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()[: len(buffer.getvalue()) // 2]).decode()


def image_block(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


REFUSED: dict[str, tuple[Any, ImageLimits | None, type[Exception]]] = {
    "truncated image": (
        lambda: image_block(f"data:image/png;base64,{truncated_png()}"),
        None,
        ImageInputError,
    ),
    "image over the pixel limit": (None, ImageLimits(max_pixels=500), ImageInputError),
    "link-local URL": (
        lambda: image_block("http://169.254.169.254/latest/meta-data/iam/x.png"),
        None,
        ImageInputError,
    ),
    "unsupported part": (
        lambda: {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        None,
        UnsupportedContentError,
    ),
}
"""Input the guard refuses: an extra block (beside a 40x30 image), the limits, the error."""


@pytest.mark.parametrize("call", ["ainvoke", "astream", "invoke", "stream"])
@pytest.mark.parametrize("case", list(REFUSED))
async def test_input_the_guard_refuses_reaches_no_model(case, call, image_b64):
    block, limits, error = REFUSED[case]
    messages = question(image_b64, *([block()] if block else []))
    vlm = KeyedChatModel(original=[ORIGINAL_ANSWER])
    model = VLMGuardSpeculativeChatModel(
        model=vlm, guard=LateChecks(lambda: bool(vlm.received("original")), limits)
    )

    with pytest.raises(error) as enforced:  # what the guard in front of the model raises
        await (
            VLMGuardRewriter(rewriter=LateChecks(lambda: bool(vlm.received("original")), limits))
            | vlm
        ).ainvoke(messages)
    with pytest.raises(error) as speculative:
        if call == "ainvoke":
            await model.ainvoke(messages)
        elif call == "astream":
            [chunk async for chunk in model.astream(messages)]
        elif call == "invoke":
            await asyncio.to_thread(model.invoke, messages)
        else:
            await asyncio.to_thread(lambda: list(model.stream(messages)))

    assert type(speculative.value) is type(enforced.value)
    assert vlm.received("original") == [] and vlm.received("guarded") == []
    assert model.stats.wasted_calls == 0


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


class StreamedTokens(AsyncCallbackHandler):
    """The tokens a handler set on a model is told of."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(
        self, token: str | list[str | dict[str, Any]], **kwargs: Any
    ) -> None:
        self.tokens.append(str(token))


async def test_a_miss_closes_the_http_stream_of_the_original_call(backend, rewritten, image_b64):
    openai = pytest.importorskip("langchain_openai")
    from vlmguard_plugins.testing import ChatCompletionServer, HeldStream

    def answer(request: GenerationRequest) -> str:
        text = str(request.messages[-1]["content"])
        return GUARDED_ANSWER if rewritten in text else "UNSAFE " * 20

    streaming = StreamedTokens()
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
        deadline = time.monotonic() + 10
        while not server.chat_requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # until the original request is being answered
        gate.open.set()
        text = await consumer
        server.release.set()  # the server tries to send the rest: nobody is reading

        assert text == GUARDED_ANSWER
        # The handler set on ChatOpenAI itself never saw the speculative answer's tokens.
        assert "UNSAFE" not in "".join(streaming.tokens)
        deadline = time.monotonic() + 10
        while server.abandoned_streams == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.abandoned_streams == 1
        assert len(server.chat_requests) == 2
        assert server.chat_requests[1].text == rewritten
        assert len(server.chat_requests[1].image_urls) == 1
