"""Speculative mode: time to the first token, speculative against guard-then-call.

The rewriter is a ``ScriptedBackend`` with a fixed latency (``REWRITER_S``) and the VLM
a stream with a fixed time to its first token (``VLM_TTFT_S``) and a fixed time per
later token.  Guarding first costs the sum of the two before the first token;
speculative mode should cost their maximum on a benign request (a hit), and about the
sum on a risky one (a miss: the original call is cancelled at the verdict and the
rewrite is sent).  Measured through the core primitive and through the LangChain and
LlamaIndex wrappers; each figure is the median of interleaved rounds.

Run: .venv/bin/python perf/perf_speculative.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_vlmguard import VLMGuardRewriter
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    MessageRole,
)
from llama_index.core.llms.mock import MockLLM
from llama_index_vlmguard import VLMGuardLLM

from vlmguard_plugins import GuardedConversation, Rewriter, SpeculationStats, speculate
from vlmguard_plugins.conversation import Conversation, TextPart, Turn
from vlmguard_plugins.testing import ScriptedBackend

REWRITER_S = 0.100
VLM_TTFT_S = 0.150
VLM_TOKEN_S = 0.010
TOKENS = 5
ROUNDS = 15
QUESTION = "How do I use this?"
REWRITE = "Describe how to handle this tool safely."


def _rewriter(risky: bool) -> Rewriter:
    if risky:
        return Rewriter(ScriptedBackend.rewriting_to(REWRITE, risk="medium", delay_s=REWRITER_S))
    return Rewriter(ScriptedBackend(delay_s=REWRITER_S))


async def _vlm_tokens() -> AsyncIterator[str]:
    await asyncio.sleep(VLM_TTFT_S)
    for index in range(TOKENS):
        if index:
            await asyncio.sleep(VLM_TOKEN_S)
        yield f"token{index} "


async def _first_and_last(stream: AsyncIterator[Any]) -> tuple[float, float]:
    """Seconds to the first and to the last chunk of ``stream``."""
    started = time.perf_counter()
    first = None
    async for _ in stream:
        if first is None:
            first = time.perf_counter() - started
    assert first is not None
    return first, time.perf_counter() - started


# -- the core primitive -------------------------------------------------------------------


def _conversation() -> Conversation:
    return Conversation((Turn("user", (TextPart(QUESTION),)),))


async def _core_sequential(rewriter: Rewriter) -> AsyncIterator[str]:
    await rewriter.aguard(_conversation())
    async for token in _vlm_tokens():
        yield token


def _core_speculative(rewriter: Rewriter, stats: SpeculationStats) -> AsyncIterator[str]:
    def guarded(_: GuardedConversation) -> AsyncIterator[str]:
        return _vlm_tokens()

    return speculate(rewriter.aguard(_conversation()), _vlm_tokens, guarded, stats)


# -- LangChain ----------------------------------------------------------------------------


class _TimedChatModel(BaseChatModel):
    """A chat model with a fixed time to its first token."""

    @property
    def _llm_type(self) -> str:
        return "timed"

    # The methods keep BaseChatModel's own signatures (as the adapter's and tests' models do).

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="unused"))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for token in _vlm_tokens():
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))


# -- LlamaIndex ---------------------------------------------------------------------------


class _TimedLLM(MockLLM):
    """A chat LLM with a fixed time to its first token."""

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        async def stream() -> ChatResponseAsyncGen:
            text = ""
            async for token in _vlm_tokens():
                text += token
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=token
                )

        return stream()


async def _llama_stream(llm: VLMGuardLLM) -> AsyncIterator[ChatResponse]:
    async for response in await llm.astream_chat([ChatMessage(role="user", content=QUESTION)]):
        yield response


# -- measuring ----------------------------------------------------------------------------

Variant = Callable[[], AsyncIterator[Any]]


async def _compare(label: str, sequential: Variant, speculative: Variant) -> None:
    first: dict[str, list[float]] = {"sequential": [], "speculative": []}
    last: dict[str, list[float]] = {"sequential": [], "speculative": []}
    variants = {"sequential": sequential, "speculative": speculative}
    for round_number in range(ROUNDS):
        # Interleaved, alternating which goes first, so drift affects both alike.
        order = list(variants) if round_number % 2 == 0 else list(reversed(variants))
        for name in order:
            to_first, to_last = await _first_and_last(variants[name]())
            first[name].append(to_first)
            last[name].append(to_last)
    seq_first = statistics.median(first["sequential"])
    spec_first = statistics.median(first["speculative"])
    seq_last = statistics.median(last["sequential"])
    spec_last = statistics.median(last["speculative"])
    print(
        f"  {label:<30} first token: sequential {seq_first * 1000:6.0f} ms  "
        f"speculative {spec_first * 1000:6.0f} ms  ratio {spec_first / seq_first:4.2f}   "
        f"last token: {seq_last * 1000:6.0f} / {spec_last * 1000:6.0f} ms"
    )


async def _run(risky: bool) -> None:
    kind = "risky (a miss)" if risky else "benign (a hit)"
    print(f"{kind}:")
    stats = SpeculationStats()
    rewriter = _rewriter(risky)
    await _compare(
        "core speculate()",
        lambda: _core_sequential(rewriter),
        lambda: _core_speculative(rewriter, stats),
    )
    guard = VLMGuardRewriter(rewriter=rewriter)
    model = _TimedChatModel()
    chain = guard | model
    speculative_model = guard.speculative(model)
    message = [HumanMessage(content=QUESTION)]
    await _compare(
        "LangChain guard | model",
        lambda: chain.astream(message),
        lambda: speculative_model.astream(message),
    )
    llm = _TimedLLM(max_tokens=None)
    plain = VLMGuardLLM(llm=llm, rewriter=rewriter, verdict_cache_size=0)
    spec = VLMGuardLLM(llm=llm, rewriter=rewriter, verdict_cache_size=0, speculative=True)
    await _compare(
        "LlamaIndex VLMGuardLLM",
        lambda: _llama_stream(plain),
        lambda: _llama_stream(spec),
    )
    total = stats.hits + stats.misses
    print(
        f"  core counters over {total} calls: hits {stats.hits}, misses {stats.misses}, "
        f"wasted VLM calls {stats.wasted_calls}"
    )


async def main() -> None:
    print(
        f"rewriter {REWRITER_S * 1000:.0f} ms, VLM first token {VLM_TTFT_S * 1000:.0f} ms, "
        f"{TOKENS} tokens {VLM_TOKEN_S * 1000:.0f} ms apart; medians of {ROUNDS} interleaved "
        "rounds (ideal hit: the max of the two, sequential: their sum)"
    )
    for risky in (False, True):
        await _run(risky)


if __name__ == "__main__":
    asyncio.run(main())
