"""``VLMGuardLLM``: any LlamaIndex LLM, with every user prompt guarded before it is sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr, SerializeAsAny, ValidationError

from vlmguard_plugins import Rewriter, RewriterSettings, Risk
from vlmguard_plugins.errors import ConfigurationError, ImageInputError
from vlmguard_plugins.speculative import SpeculationStats
from vlmguard_plugins.types import FailurePolicyName

from . import speculative as _speculative
from .conversation import find_user_text, last_user_index
from .messages import GuardedMessages, aguard_messages, guard_messages
from .settings import build_rewriter_from_options, settings_from
from .user_query import UserQuery, current_user_query, record_user_queries
from .verdicts import DEFAULT_MAX_ENTRIES, VerdictCache

logger = logging.getLogger("llama_index_vlmguard")

METADATA_KEY = "vlmguard"
"""Key of the guard's verdict in the ``raw`` and ``additional_kwargs`` of a blocked response."""

DEFAULT_BLOCK_MESSAGE = "I can't help with this request."
"""The assistant message that ends a tool-calling call (an agent's run) the guard blocked."""


class VLMGuardLLM(FunctionCallingLLM):
    """Wraps an LLM so every call is guarded by the rewriter before the LLM sees it.

    ``chat``/``achat``/``stream_chat``/``astream_chat`` guard the messages through the
    core (:func:`~llama_index_vlmguard.guard_messages`): the last user message's text
    is rewritten, every image of every message is shown to the rewriter, a block the
    guard cannot read is refused.  ``complete`` and its variants guard the prompt
    string the same way.  Everything else (metadata, streaming, the response objects)
    is the wrapped LLM's own, so pass the wrapper wherever LlamaIndex takes an LLM: a
    query engine, a chat engine, or (when the wrapped LLM supports function calling)
    an agent: ``chat_with_tools`` and its async and streaming forms (what ``FunctionAgent``
    and ``AgentWorkflow`` call) and ``predict_and_call`` guard the messages and leave
    the tools to the wrapped LLM's own tool handling.

    **Inside an agent** every step's call is guarded with the whole conversation: the
    user's message is rewritten, and every tool result (its text read as data, as
    history; its images with the others) is judged with it before the LLM's next call;
    a tool result itself is never rewritten.  Verdicts are kept by conversation state
    (:class:`VerdictCache`, ``verdict_cache_size`` of them) and the LLM's own answers
    through the wrapper are not new input, so a step that brings nothing new costs no
    rewriter call: a run costs one call per user message plus one per step that brings
    new tool output.  A blocked verdict (the failure policy's ``block``, or a risk at
    or above ``block_risk``) in a tool-calling call is answered by the wrapper itself,
    without calling the LLM, with ``block_message`` and no tool call, so the agent's
    run ends there with that message; the verdict is in the response's
    ``raw["vlmguard"]``.  (In plain ``chat``/``complete`` calls the failure policy's
    ``block`` prompt goes to the LLM, as at every entry point.)

    **Inside query and chat engines only the user's words are rewritten.**  The engine
    fills a template with retrieved context and the user's question; the wrapper knows
    the question from the engine call it runs in (:mod:`llama_index_vlmguard.user_query`)
    and rewrites it in place, so the template and the retrieved text reach the LLM
    intact and the rewriter reads the question (and every image), not your documents.
    The query's own image (``QueryBundle.image_path``), which LlamaIndex's engines use
    only for retrieval, is put at the start of that message, so the VLM sees the image
    the rewriter judged the question with (``attach_query_images=False`` turns it off).

    Args:
        llm: the LLM (usually a vision-language model) that answers.
        rewriter: the core :class:`~vlmguard_plugins.Rewriter`.
        on_error: override the rewriter's failure policy for this LLM.
        allow_local_files: read ``ImageBlock(path=...)`` images (and a query's
            ``image_path``) from disk (see :mod:`llama_index_vlmguard.conversation`).
        attach_query_images: send a query's ``image_path`` to the LLM with the question.
        verdict_cache_size: verdicts kept by conversation state (0: ask the rewriter at
            every call).
        block_risk: in tool-calling calls, block a verdict at or above this risk
            (``None``, default: only the failure policy's ``block`` result blocks; the
            rewrite is how the guard answers risk).
        block_message: the assistant message that answers a blocked tool-calling call.
        speculative: speculative mode for ``chat``, ``achat``, ``stream_chat`` and
            ``astream_chat``: once the guard has checked the messages (every block
            covered, every image loaded within the limits, every URL allowed), the LLM
            gets the original messages while the rewriter model reads them (messages
            the guard refuses reach no LLM), and its answer is held until the verdict;
            it is released
            for a benign, unchanged request (risk none or low), else the call is
            cancelled and the guarded messages are sent (see
            :mod:`llama_index_vlmguard.speculative`).  The answer's
            ``additional_kwargs["vlmguard"]["speculative"]`` says ``hit`` or ``miss``;
            :attr:`speculation_stats` counts them.
        max_held_chunks: in speculative streaming, the most chunks held before the
            verdict; past it the LLM's stream is not read until the verdict.

    Example::

        guarded = VLMGuardLLM.from_settings(vlm, RewriterSettings(backend="openai", ...))
        engine = index.as_query_engine(llm=guarded)
        engine.query(QueryBundle("How do I use this?", image_path="knife.jpg"))
    """

    llm: SerializeAsAny[LLM] = Field(description="The LLM that receives the guarded prompts.")
    on_error: FailurePolicyName | None = Field(
        default=None, description="Failure policy override (shield, raise, passthrough, block)."
    )
    allow_local_files: bool = Field(
        default=True, description="Read ImageBlock(path=...) images from disk."
    )
    attach_query_images: bool = Field(
        default=True, description="Send a query's image_path to the LLM with the question."
    )
    verdict_cache_size: int = Field(
        default=DEFAULT_MAX_ENTRIES,
        ge=0,
        description="Verdicts kept by conversation state (0 disables the cache).",
    )
    block_risk: Risk | None = Field(
        default=None,
        description="In tool-calling calls, block verdicts at or above this risk.",
    )
    block_message: str = Field(
        default=DEFAULT_BLOCK_MESSAGE,
        description="The assistant message that answers a blocked tool-calling call.",
    )
    speculative: bool = Field(
        default=False,
        description="Call the LLM on the original messages while the guard runs; "
        "hold the answer until the verdict.",
    )
    max_held_chunks: int | None = Field(
        default=None, ge=1, description="Speculative streaming: most chunks held."
    )
    _rewriter: Rewriter = PrivateAttr()
    _verdicts: VerdictCache | None = PrivateAttr(default=None)
    _speculation: SpeculationStats = PrivateAttr(default_factory=SpeculationStats)

    def __init__(self, llm: LLM, rewriter: Rewriter, **kwargs: Any) -> None:
        # Prompt formatting (predict, structured outputs) follows the wrapped LLM's settings.
        kwargs.setdefault("system_prompt", llm.system_prompt)
        kwargs.setdefault("messages_to_prompt", llm.messages_to_prompt)
        kwargs.setdefault("completion_to_prompt", llm.completion_to_prompt)
        kwargs.setdefault("callback_manager", llm.callback_manager)
        super().__init__(llm=llm, **kwargs)
        self._rewriter = rewriter
        if self.verdict_cache_size:
            self._verdicts = VerdictCache(self.verdict_cache_size)
        record_user_queries()

    @classmethod
    def from_settings(
        cls,
        llm: LLM,
        settings: RewriterSettings | Mapping[str, Any],
        *,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = True,
        attach_query_images: bool = True,
        **llm_options: Any,
    ) -> VLMGuardLLM:
        """Wrap ``llm`` with the rewriter ``settings`` describe (a mapping is validated).

        ``llm_options`` are the wrapper's other fields (``block_risk``,
        ``block_message``, ``verdict_cache_size``).

        Example::

            VLMGuardLLM.from_settings(
                vlm, RewriterSettings(backend="openai", model="vlmguard-r1",
                                      base_url="http://localhost:8000/v1", on_error="block")
            )

        Raises:
            ConfigurationError: an invalid or unknown setting, or an unknown backend.
        """
        return cls(
            llm=llm,
            rewriter=settings_from(settings).build(),
            on_error=on_error,
            allow_local_files=allow_local_files,
            attach_query_images=attach_query_images,
            **llm_options,
        )

    @classmethod
    def from_backend(
        cls,
        llm: LLM,
        backend: str,
        *,
        allow_local_files: bool = True,
        attach_query_images: bool = True,
        rewriter_options: Mapping[str, Any] | None = None,
        llm_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> VLMGuardLLM:
        """Wrap ``llm`` with a rewriter on ``backend``.

        An option named like a :class:`~vlmguard_plugins.RewriterSettings` field
        (``model``, ``base_url``, ``api_key``, ``on_error``, ``timeout_s``,
        ``cache_size``, ``max_images``, ``allow_remote_images``...) sets it; any other
        option goes to the backend (``load_backend``).  ``rewriter_options`` is the
        older spelling of the rewriter's settings (also taking ``image_limits`` and
        ``url_policy`` objects) and is deprecated.  ``llm_options`` are the wrapper's
        other fields (``block_risk``, ``block_message``, ``verdict_cache_size``).

        Example::

            VLMGuardLLM.from_backend(
                vlm, "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
            )
        """
        return cls(
            llm=llm,
            rewriter=build_rewriter_from_options(backend, options, rewriter_options),
            allow_local_files=allow_local_files,
            attach_query_images=attach_query_images,
            **dict(llm_options or {}),
        )

    @classmethod
    def class_name(cls) -> str:
        return "VLMGuardLLM"

    @property
    def rewriter(self) -> Rewriter:
        """The rewriter that guards this LLM."""
        return self._rewriter

    @property
    def speculation_stats(self) -> SpeculationStats:
        """Speculative mode's hits, misses and wasted (cancelled or discarded) calls."""
        return self._speculation

    @property
    def verdicts(self) -> VerdictCache | None:
        """The verdicts kept by conversation state (``None`` when the cache is off)."""
        return self._verdicts

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    # -- guarding ------------------------------------------------------------------------

    def _with_query(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[Sequence[ChatMessage], str | None]:
        """The messages (with the query's image when it goes along) and the user's words."""
        query = current_user_query()
        if query is None:
            return messages, None
        if self.attach_query_images and query.image:
            messages = _with_query_image(messages, query)
        return messages, query.text

    def _guard(self, messages: Sequence[ChatMessage]) -> GuardedMessages:
        messages, user_text = self._with_query(messages)
        return guard_messages(
            messages,
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
            user_text=user_text,
            cache=self._verdicts,
        )

    async def _aguard(self, messages: Sequence[ChatMessage]) -> GuardedMessages:
        messages, user_text = self._with_query(messages)
        return await aguard_messages(
            messages,
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
            user_text=user_text,
            cache=self._verdicts,
        )

    def _guard_prompt(self, prompt: str) -> str:
        query = current_user_query()
        guarded = guard_messages(
            [ChatMessage(role=MessageRole.USER, content=prompt)],
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
            user_text=query.text if query is not None else None,
            cache=self._verdicts,
        )
        return _prompt_of(guarded, prompt)

    async def _aguard_prompt(self, prompt: str) -> str:
        query = current_user_query()
        guarded = await aguard_messages(
            [ChatMessage(role=MessageRole.USER, content=prompt)],
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
            user_text=query.text if query is not None else None,
            cache=self._verdicts,
        )
        return _prompt_of(guarded, prompt)

    # -- chat ----------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self.speculative:
            sent = self._with_query(messages)[0]
            return self._answer(
                _speculative.chat(
                    lambda: self._guard(messages), self.llm, sent, self._speculation, **kwargs
                )
            )
        return self._answer(self.llm.chat(self._guard(messages).messages, **kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self.speculative:
            sent = self._with_query(messages)[0]
            return self._answer(
                await _speculative.achat(
                    self._aguard(messages), self.llm, sent, self._speculation, **kwargs
                )
            )
        guarded = await self._aguard(messages)
        return self._answer(await self.llm.achat(guarded.messages, **kwargs))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        if self.speculative:
            # The guard runs when the first chunk is asked for, with the original call.
            sent = self._with_query(messages)[0]
            return self._answer_stream(
                _speculative.stream_chat(
                    lambda: self._guard(messages),
                    self.llm,
                    sent,
                    self._speculation,
                    self.max_held_chunks,
                    **kwargs,
                )
            )
        # The rewrite happens before the first token is asked for, so a refusal or a
        # failure under the `raise` policy surfaces here, not in the middle of the stream.
        return self._answer_stream(self.llm.stream_chat(self._guard(messages).messages, **kwargs))

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        if self.speculative:
            sent = self._with_query(messages)[0]
            return self._answer_astream(
                _speculative.astream_chat(
                    self._aguard(messages),
                    self.llm,
                    sent,
                    self._speculation,
                    self.max_held_chunks,
                    **kwargs,
                )
            )
        guarded = await self._aguard(messages)
        return self._answer_astream(await self.llm.astream_chat(guarded.messages, **kwargs))

    # -- the model's answers: not new input when they come back in the conversation ----

    def _answer(self, response: ChatResponse) -> ChatResponse:
        if self._verdicts is not None:
            self._verdicts.remember_answer(response.message)
        return response

    def _answer_stream(self, stream: ChatResponseGen) -> ChatResponseGen:
        if self._verdicts is None:
            return stream
        return _remembering(stream, self._verdicts)

    def _answer_astream(self, stream: ChatResponseAsyncGen) -> ChatResponseAsyncGen:
        if self._verdicts is None:
            return stream
        return _aremembering(stream, self._verdicts)

    # -- completion ----------------------------------------------------------------------

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(self._guard_prompt(prompt), formatted=formatted, **kwargs)

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        guarded = await self._aguard_prompt(prompt)
        return await self.llm.acomplete(guarded, formatted=formatted, **kwargs)

    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        return self.llm.stream_complete(self._guard_prompt(prompt), formatted=formatted, **kwargs)

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        guarded = await self._aguard_prompt(prompt)
        return await self.llm.astream_complete(guarded, formatted=formatted, **kwargs)

    # -- function calling: the wrapped LLM's own tool handling, around the guarded chat --
    #
    # The base class would prepare the call and send it through the guarded `chat`;
    # doing the same here, step by step, lets a blocked verdict end the call before the
    # LLM (which could still call tools) sees it.

    def chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        messages, chat_kwargs = self._tool_call(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        guarded = self._guard(messages)
        if (blocked := self._blocked(guarded)) is not None:
            return blocked
        response = self._answer(self.llm.chat(guarded.messages, **chat_kwargs))
        return self._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    async def achat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        messages, chat_kwargs = self._tool_call(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        guarded = await self._aguard(messages)
        if (blocked := self._blocked(guarded)) is not None:
            return blocked
        response = self._answer(await self.llm.achat(guarded.messages, **chat_kwargs))
        return self._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def stream_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseGen:
        messages, chat_kwargs = self._tool_call(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        guarded = self._guard(messages)
        if (blocked := self._blocked(guarded)) is not None:
            return _stream_of(blocked)
        return self._answer_stream(self.llm.stream_chat(guarded.messages, **chat_kwargs))

    async def astream_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseAsyncGen:
        messages, chat_kwargs = self._tool_call(
            tools, user_msg, chat_history, verbose, allow_parallel_tool_calls, tool_required, kwargs
        )
        guarded = await self._aguard(messages)
        if (blocked := self._blocked(guarded)) is not None:
            return _astream_of(blocked)
        stream = await self.llm.astream_chat(guarded.messages, **chat_kwargs)
        return self._answer_astream(stream)

    def _tool_call(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None,
        chat_history: list[ChatMessage] | None,
        verbose: bool,
        allow_parallel_tool_calls: bool,
        tool_required: bool,
        kwargs: dict[str, Any],
    ) -> tuple[list[ChatMessage], dict[str, Any]]:
        """The messages of a tool-calling call, and the wrapped LLM's other arguments."""
        chat_kwargs = self._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )
        messages = chat_kwargs.pop("messages")
        return list(messages), chat_kwargs

    def _blocked(self, guarded: GuardedMessages) -> ChatResponse | None:
        """The answer to a tool-calling call whose verdict blocks it, else ``None``.

        ``block_message``, no tool call, the verdict attached.  The verdict goes in the
        response's ``raw`` and ``additional_kwargs``, not in the message's: the message
        is kept in the agent's memory and sent to the LLM with the next user message,
        and providers reject message fields they do not know.
        """
        result = guarded.result
        if result is None:
            return None
        over_threshold = (
            self.block_risk is not None
            and result.risk is not None
            and result.risk >= self.block_risk
        )
        if not (result.blocked or over_threshold):
            return None
        logger.info(
            "vlmguard blocked a tool-calling call: %s verdict (risk %s)",
            result.action,
            result.risk_label,
        )
        verdict = result.model_dump(mode="json", exclude={"raw"})
        response = ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=self.block_message),
            delta=self.block_message,
            raw={METADATA_KEY: verdict},
            additional_kwargs={METADATA_KEY: verdict},
        )
        return self._answer(response)

    def _function_calling_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise ConfigurationError(
                f"the wrapped LLM ({type(self.llm).__name__}) does not support function calling"
            )
        return self.llm

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        # The compat entry point copes with LLM integrations that predate `tool_required`.
        return self._function_calling_llm()._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self._function_calling_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        if _is_block_response(response):
            # A blocked call has no tool call by design: `predict_and_call` answers with
            # the block message instead of failing for want of one.
            return []
        return self._function_calling_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )


def _is_block_response(response: ChatResponse) -> bool:
    return isinstance(response.raw, dict) and METADATA_KEY in response.raw


def _remembering(stream: ChatResponseGen, verdicts: VerdictCache) -> ChatResponseGen:
    """``stream`` as it is; its last chunk's message (the whole answer) is remembered."""
    last: ChatResponse | None = None
    for last in stream:
        yield last
    if last is not None:
        verdicts.remember_answer(last.message)


async def _aremembering(
    stream: ChatResponseAsyncGen, verdicts: VerdictCache
) -> ChatResponseAsyncGen:
    last: ChatResponse | None = None
    async for last in stream:
        yield last
    if last is not None:
        verdicts.remember_answer(last.message)


def _stream_of(response: ChatResponse) -> Generator[ChatResponse, None, None]:
    yield response


async def _astream_of(response: ChatResponse) -> AsyncGenerator[ChatResponse, None]:
    yield response


def _prompt_of(guarded: GuardedMessages, prompt: str) -> str:
    """The guarded completion prompt (the one text block of the one message)."""
    content = guarded.messages[-1].content
    return prompt if content is None else content


def _with_query_image(messages: Sequence[ChatMessage], query: UserQuery) -> Sequence[ChatMessage]:
    """``messages`` with the query's image first in the message holding the user's words.

    Only a message that holds the words (the engine's answer prompt, not a helper prompt
    of its own) gets the image, and only when no block there shows it already.
    """
    index = last_user_index(messages)
    if index is None or query.image is None:
        return messages
    message = messages[index]
    if find_user_text(message, query.text) is None:
        return messages
    if any(_shows(block, query.image) for block in message.blocks):
        return messages
    guarded = list(messages)
    guarded[index] = message.model_copy(
        update={"blocks": [_query_image_block(query.image), *message.blocks]}
    )
    return guarded


def _shows(block: Any, image: str) -> bool:
    if not isinstance(block, ImageBlock):
        return False
    return any(source is not None and str(source) == image for source in (block.path, block.url))


def _query_image_block(image: str) -> ImageBlock:
    try:
        if image[:5].lower() == "data:" or "://" in image[:16]:
            return ImageBlock(url=image)
        return ImageBlock(path=Path(image))
    except ValidationError as exc:
        raise ImageInputError(
            f"the query's image {image[:80]!r} cannot be read: {exc.errors()[0]['msg']}"
        ) from exc


__all__ = ["DEFAULT_BLOCK_MESSAGE", "METADATA_KEY", "VLMGuardLLM"]
