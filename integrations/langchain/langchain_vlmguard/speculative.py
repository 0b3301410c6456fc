"""``VLMGuardSpeculativeChatModel``: a chat model guarded in speculative mode.

The guarded chat model checks the caller's messages as the guard always does, then
sends the original messages to the wrapped model while the rewriter model reads them,
and holds the answer until the verdict (see :mod:`vlmguard_plugins.speculative`): a
benign, unchanged request gets the original answer without waiting for the rewriter
first; any other verdict cancels that call and sends the guarded messages instead,
exactly as ``guard | model`` would.  Messages the guard refuses reach no model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, BaseMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field

from vlmguard_plugins import Rewriter
from vlmguard_plugins.conversation import Conversation, GuardedConversation

# The same core entry points as the LlamaIndex adapter's: adapters stand alone, so each
# imports them itself.
from vlmguard_plugins.speculative import (
    SpeculationStats,
    releasable,
    speculate,
    speculate_once,
    speculate_once_sync,
    speculate_sync,
)

from .conversation import METADATA_KEY, from_conversation, result_summary, to_conversation
from .runnable import REWRITE_EVENT, VLMGuardRewriter

SpeculativeOutcome = Literal["hit", "miss"]
"""``hit``: the answer to the original messages was released; ``miss``: the guarded ones
were sent instead."""

SPECULATIVE_KEY = "speculative"
"""Key of the outcome (``hit`` or ``miss``) in ``response_metadata["vlmguard"]``."""

# The wrapped model is called without the caller's callbacks: its tokens would reach a
# streaming handler (``astream_events``, a tracer's live view) before the verdict.  This
# model's own run reports the answer once it is released.
_UNOBSERVED: RunnableConfig = {"callbacks": []}

# Fields through which a chat model reports to handlers of its own.
_OWN_REPORTING = {"callbacks": None, "callback_manager": None, "verbose": False}


def _silent(model: BaseChatModel) -> BaseChatModel:
    """A copy of ``model`` without handlers of its own, for the speculative call.

    Handlers set on the model itself (``ChatOpenAI(callbacks=[...])``) would get the
    original answer's tokens before the verdict, or an answer the verdict discards.
    The copy is shallow: it shares the model's client.
    """
    fields = type(model).model_fields
    return model.model_copy(update={k: v for k, v in _OWN_REPORTING.items() if k in fields})


class VLMGuardSpeculativeChatModel(BaseChatModel):
    """A chat model that calls ``model`` on the original messages while the rewriter runs.

    The answer is held until the guard's verdict.  When the rewriter judges the request
    risk none or low and leaves it unchanged, the held answer is released (a *hit*):
    the rewriter's latency is hidden behind the model's.  Otherwise the original call is
    cancelled (its stream closed) and ``model`` gets the guarded messages, the rewrite
    written back as ``guard | model`` would send it (a *miss*).  Not a byte of the
    original answer reaches the caller before the verdict.  The original call starts
    only once the guard has checked the messages (every block covered, every image
    loaded within the limits, every URL allowed): input the guard cannot check raises
    the guard's :class:`~vlmguard_plugins.errors.InputError` and reaches no model.

    The answer's ``response_metadata["vlmguard"]`` holds ``speculative`` (``hit`` or
    ``miss``) and the rewrite's outcome (risk, analysis, fallback); when streaming, it
    is on the first chunk.  :attr:`stats` counts hits, misses and wasted calls.  The
    speculative call is reported neither to the caller's callbacks nor to handlers set
    on ``model`` itself (it runs on a copy of ``model`` without them, ``verbose`` off):
    a streaming handler would otherwise see the held answer.  This model's run reports
    the answer once released, and (in ``invoke`` and ``ainvoke``, where LangChain gives
    the run to the model) the rewrite in a ``vlmguard_rewrite`` custom event, as the
    guard does.  Process-wide tracers (LangSmith, ``tracing_v2_enabled``,
    ``collect_runs``) still record the inner call, as they record every run.

    ``model`` must be a chat model itself: bind arguments and retries on the result
    (``guard.speculative(model).bind(...)``, ``.with_retry()``).

    ``stream`` and ``astream`` stream for real: the held chunks at the verdict, then the
    rest as the model produces them.  The synchronous forms read the original call in a
    worker thread, which cannot be interrupted: on a miss ``invoke`` discards the
    original answer when it comes, and ``stream`` closes the original stream at its
    next chunk.

    Example:
        .. code-block:: python

            guard = VLMGuardRewriter.from_backend("openai", model="vlmguard-r1", base_url=...)
            vlm = guard.speculative(ChatOpenAI(model="gpt-4o-mini"))
            answer = await vlm.ainvoke([HumanMessage(content=[text_block, image_block])])
            answer.response_metadata["vlmguard"]["speculative"]  # "hit" or "miss"
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel
    """The vision-language model that answers."""
    guard: VLMGuardRewriter
    """The guard (a :class:`~vlmguard_plugins.Rewriter` is wrapped into one); its
    ``on_error`` applies."""
    max_held_chunks: int | None = Field(default=None, ge=1)
    """When streaming: the most chunks held before the verdict; past it the model's
    stream is not read until the verdict."""
    stats: SpeculationStats = Field(default_factory=SpeculationStats, exclude=True)
    """Hits, misses and wasted (cancelled or discarded) calls of this model."""

    def __init__(
        self, *, model: BaseChatModel, guard: VLMGuardRewriter | Rewriter, **kwargs: Any
    ) -> None:
        if not isinstance(model, BaseChatModel):
            raise TypeError(
                "speculative mode wraps a chat model itself, not "
                f"{type(model).__name__}: pass the model (guard.speculative(model)) and "
                "bind arguments or retries on the result "
                "(guard.speculative(model).bind(...), .with_retry())"
            )
        if isinstance(guard, Rewriter):
            guard = VLMGuardRewriter(rewriter=guard)
        # Passed as a mapping: the base class's signature does not know this model's fields.
        super().__init__(**{**kwargs, "model": model, "guard": guard})

    @property
    def _llm_type(self) -> str:
        return "vlmguard-speculative"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model._identifying_params, "max_held_chunks": self.max_held_chunks}

    # -- async: the primary path -----------------------------------------------------------
    # The four methods keep BaseChatModel's own signatures, as every LangChain chat model.

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = _UNOBSERVED
        verdict = _Verdict(self, to_conversation(messages), run_manager)

        async def original() -> BaseMessage:
            return await _silent(self.model).ainvoke(messages, config, stop=stop, **kwargs)

        async def guarded(result: GuardedConversation) -> BaseMessage:
            return await self.model.ainvoke(_messages(result), config, stop=stop, **kwargs)

        answer = await speculate_once(verdict.run(), original, guarded, self.stats)
        return ChatResult(generations=[ChatGeneration(message=verdict.mark(answer))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        config = _UNOBSERVED
        verdict = _Verdict(self, to_conversation(messages), run_manager)

        def original() -> AsyncIterator[BaseMessageChunk]:
            return _silent(self.model).astream(messages, config, stop=stop, **kwargs)

        def guarded(result: GuardedConversation) -> AsyncIterator[BaseMessageChunk]:
            return self.model.astream(_messages(result), config, stop=stop, **kwargs)

        first = True
        async for message in speculate(
            verdict.run(), original, guarded, self.stats, self.max_held_chunks
        ):
            chunk = ChatGenerationChunk(
                message=_as_chunk(verdict.mark(message) if first else message)
            )
            first = False
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- sync ------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        verdict = _SyncVerdict(self.guard, messages, run_manager)

        def original() -> BaseMessage:
            return _silent(self.model).invoke(messages, _UNOBSERVED, stop=stop, **kwargs)

        def guarded(result: GuardedConversation) -> BaseMessage:
            return self.model.invoke(_messages(result), _UNOBSERVED, stop=stop, **kwargs)

        answer = speculate_once_sync(verdict.run, original, guarded, self.stats)
        return ChatResult(generations=[ChatGeneration(message=verdict.mark(answer))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        verdict = _SyncVerdict(self.guard, messages, run_manager)

        def original() -> Iterator[BaseMessageChunk]:
            return _silent(self.model).stream(messages, _UNOBSERVED, stop=stop, **kwargs)

        def guarded(result: GuardedConversation) -> Iterator[BaseMessageChunk]:
            return self.model.stream(_messages(result), _UNOBSERVED, stop=stop, **kwargs)

        first = True
        for message in speculate_sync(
            verdict.run, original, guarded, self.stats, self.max_held_chunks
        ):
            chunk = ChatGenerationChunk(
                message=_as_chunk(verdict.mark(message) if first else message)
            )
            first = False
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


class _SyncVerdict:
    """The guard of one synchronous call: runs it, tells the callbacks, marks the answer."""

    def __init__(
        self,
        guard: VLMGuardRewriter,
        messages: list[BaseMessage],
        run_manager: CallbackManagerForLLMRun | None,
    ) -> None:
        self._guard = guard
        self._messages = messages
        self._run_manager = run_manager
        self.result: GuardedConversation | None = None

    def run(self) -> GuardedConversation:
        guard = self._guard
        result = guard.rewriter.guard(
            to_conversation(self._messages), on_error=guard.on_error, allow_local_files=False
        )
        self.result = result
        _dispatch_sync(self._run_manager, result)
        return result

    def mark(self, message: BaseMessage) -> BaseMessage:
        assert self.result is not None  # an answer comes only after the verdict
        return _mark(message, self.result)


class _Verdict:
    """The guard of one call: runs it, tells the callbacks, and marks the answer."""

    def __init__(
        self,
        model: VLMGuardSpeculativeChatModel,
        conversation: Conversation,
        run_manager: AsyncCallbackManagerForLLMRun | None,
    ) -> None:
        self._guard = model.guard
        self._conversation = conversation
        self._run_manager = run_manager
        self.result: GuardedConversation | None = None

    async def run(self) -> GuardedConversation:
        result = await self._guard.rewriter.aguard(
            self._conversation, on_error=self._guard.on_error, allow_local_files=False
        )
        self.result = result
        run_manager = self._run_manager
        if result.result is not None and run_manager is not None and _has_listeners(run_manager):
            manager = AsyncCallbackManager(
                handlers=run_manager.handlers, parent_run_id=run_manager.parent_run_id
            )
            await manager.on_custom_event(
                REWRITE_EVENT, result_summary(result.result), run_id=run_manager.run_id
            )
        return result

    def mark(self, message: BaseMessage) -> BaseMessage:
        assert self.result is not None  # an answer comes only after the verdict
        return _mark(message, self.result)


def _mark(message: BaseMessage, guarded: GuardedConversation) -> BaseMessage:
    """The answer with the speculation's outcome and the rewrite's under ``vlmguard``."""
    outcome: SpeculativeOutcome = "hit" if releasable(guarded) else "miss"
    data: dict[str, Any] = {SPECULATIVE_KEY: outcome}
    if guarded.result is not None:
        data.update(result_summary(guarded.result))
    metadata = {**message.response_metadata, METADATA_KEY: data}
    return message.model_copy(update={"response_metadata": metadata})


def _messages(guarded: GuardedConversation) -> list[BaseMessage]:
    """The guarded messages, written back as the non-speculative guard writes them."""
    return from_conversation(guarded.conversation, result=guarded.result, target=guarded.target)


def _as_chunk(message: BaseMessage) -> BaseMessageChunk:
    if isinstance(message, BaseMessageChunk):
        return message
    return AIMessageChunk(
        content=message.content,
        id=message.id,
        response_metadata=message.response_metadata,
        additional_kwargs=message.additional_kwargs,
    )


def _has_listeners(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun) -> bool:
    return bool(run_manager.handlers or run_manager.inheritable_handlers)


def _dispatch_sync(
    run_manager: CallbackManagerForLLMRun | None, result: GuardedConversation
) -> None:
    if result.result is not None and run_manager is not None and _has_listeners(run_manager):
        manager = CallbackManager(
            handlers=run_manager.handlers, parent_run_id=run_manager.parent_run_id
        )
        manager.on_custom_event(
            REWRITE_EVENT, result_summary(result.result), run_id=run_manager.run_id
        )


def speculative_outcome(message: BaseMessage) -> SpeculativeOutcome | None:
    """``hit`` or ``miss`` for an answer of :class:`VLMGuardSpeculativeChatModel`, else None."""
    data = message.response_metadata.get(METADATA_KEY)
    outcome = data.get(SPECULATIVE_KEY) if isinstance(data, dict) else None
    return outcome if outcome in ("hit", "miss") else None


__all__ = [
    "SPECULATIVE_KEY",
    "SpeculativeOutcome",
    "VLMGuardSpeculativeChatModel",
    "speculative_outcome",
]
