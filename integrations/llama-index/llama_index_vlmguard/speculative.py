"""Speculative mode for :class:`~llama_index_vlmguard.VLMGuardLLM` (``speculative=True``).

Once the guard has checked the messages (every block covered, every image loaded and
decoded within the limits, every URL allowed), the wrapped LLM gets the original
messages while the rewriter model reads them, and its answer is held until the verdict
(see :mod:`vlmguard_plugins.speculative`): a benign, unchanged request gets the
original answer without waiting for the rewriter first; any other verdict cancels that
call (its stream closed) and sends the guarded messages instead, exactly as the
non-speculative wrapper would.  Messages the guard refuses reach no LLM.

The functions here take the guard and the LLM as arguments, so that the wrapper's
``chat``, ``achat``, ``stream_chat`` and ``astream_chat`` stay one line each.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
)
from llama_index.core.llms import LLM

# The same core entry points as the LangChain adapter's: adapters stand alone, so each
# imports them itself.
from vlmguard_plugins.speculative import (
    SpeculationStats,
    releasable,
    speculate,
    speculate_once,
    speculate_once_sync,
    speculate_sync,
)

from .messages import GuardedMessages

METADATA_KEY = "vlmguard"
"""Key of the speculation's outcome in a response's ``additional_kwargs``."""

SpeculativeOutcome = Literal["hit", "miss"]
"""``hit``: the answer to the original messages was released; ``miss``: the guarded
messages were sent instead."""


class _Verdict:
    """Keeps the guard's outcome of one call, to mark the answer with it."""

    def __init__(self) -> None:
        self.result: GuardedMessages | None = None

    def keep(self, result: GuardedMessages) -> GuardedMessages:
        self.result = result
        return result

    async def awaiting(self, guard: Awaitable[GuardedMessages]) -> GuardedMessages:
        return self.keep(await guard)

    def mark(self, response: ChatResponse) -> ChatResponse:
        assert self.result is not None  # an answer comes only after the verdict
        return mark(response, self.result)


def mark(response: ChatResponse, guarded: GuardedMessages) -> ChatResponse:
    """``response`` with ``additional_kwargs["vlmguard"]``: the outcome and the verdict."""
    outcome: SpeculativeOutcome = "hit" if releasable(guarded) else "miss"
    data: dict[str, Any] = {"speculative": outcome}
    if guarded.result is not None:
        data.update(guarded.result.model_dump(mode="json", exclude={"raw"}))
    kwargs = {**response.additional_kwargs, METADATA_KEY: data}
    return response.model_copy(update={"additional_kwargs": kwargs})


def speculative_outcome(response: ChatResponse) -> SpeculativeOutcome | None:
    """``hit`` or ``miss`` for an answer of a speculative ``VLMGuardLLM``, else ``None``."""
    data = response.additional_kwargs.get(METADATA_KEY)
    outcome = data.get("speculative") if isinstance(data, dict) else None
    return outcome if outcome in ("hit", "miss") else None


async def achat(
    guard: Awaitable[GuardedMessages],
    llm: LLM,
    messages: Sequence[ChatMessage],
    stats: SpeculationStats,
    **kwargs: Any,
) -> ChatResponse:
    """The answer of ``llm`` to ``messages``, released or replaced at the guard's verdict."""
    verdict = _Verdict()
    response = await speculate_once(
        verdict.awaiting(guard),
        lambda: llm.achat(messages, **kwargs),
        lambda guarded: llm.achat(guarded.messages, **kwargs),
        stats,
    )
    return verdict.mark(response)


async def astream_chat(
    guard: Awaitable[GuardedMessages],
    llm: LLM,
    messages: Sequence[ChatMessage],
    stats: SpeculationStats,
    max_held_chunks: int | None,
    **kwargs: Any,
) -> ChatResponseAsyncGen:
    """The streamed answer of ``llm``: held until the verdict, then released or replaced."""
    verdict = _Verdict()
    async for response in speculate(
        verdict.awaiting(guard),
        lambda: _streamed(llm.astream_chat(messages, **kwargs)),
        lambda guarded: _streamed(llm.astream_chat(guarded.messages, **kwargs)),
        stats,
        max_held_chunks,
    ):
        yield verdict.mark(response)


# chat and stream_chat are the sync twins of achat and astream_chat: LlamaIndex's LLM
# has both forms, and each calls its own form of the core's speculation.
def chat(
    guard: Callable[[], GuardedMessages],
    llm: LLM,
    messages: Sequence[ChatMessage],
    stats: SpeculationStats,
    **kwargs: Any,
) -> ChatResponse:
    """Synchronous :func:`achat`: the original call runs in a worker thread."""
    verdict = _Verdict()
    response = speculate_once_sync(
        lambda: verdict.keep(guard()),
        lambda: llm.chat(messages, **kwargs),
        lambda guarded: llm.chat(guarded.messages, **kwargs),
        stats,
    )
    return verdict.mark(response)


def stream_chat(
    guard: Callable[[], GuardedMessages],
    llm: LLM,
    messages: Sequence[ChatMessage],
    stats: SpeculationStats,
    max_held_chunks: int | None,
    **kwargs: Any,
) -> ChatResponseGen:
    """Synchronous :func:`astream_chat`: the original stream is read in a worker thread."""
    verdict = _Verdict()
    for response in speculate_sync(
        lambda: verdict.keep(guard()),
        lambda: llm.stream_chat(messages, **kwargs),
        lambda guarded: llm.stream_chat(guarded.messages, **kwargs),
        stats,
        max_held_chunks,
    ):
        yield verdict.mark(response)


async def _streamed(start: Awaitable[ChatResponseAsyncGen]) -> AsyncGenerator[ChatResponse, None]:
    """The stream ``astream_chat`` returns, as one generator that closes it when closed."""
    stream = await start
    try:
        async for response in stream:
            yield response
    finally:
        # An HTTP stream is closed here, so a cancelled call stops the upstream.
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


__all__ = [
    "METADATA_KEY",
    "SpeculativeOutcome",
    "achat",
    "astream_chat",
    "chat",
    "mark",
    "speculative_outcome",
    "stream_chat",
]
