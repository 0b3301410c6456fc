"""``VLMGuardLLM``: any LlamaIndex LLM, with every user prompt rewritten before it is sent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field, PrivateAttr, SerializeAsAny

from vlmguard_plugins import Rewriter, RewriteRequest, load_backend
from vlmguard_plugins.errors import ConfigurationError
from vlmguard_plugins.types import FailurePolicyName

from .events import dispatch_rewrite
from .messages import GuardedMessages, aguard_messages, guard_messages


class VLMGuardLLM(FunctionCallingLLM):
    """Wraps an LLM so the last user message of every call is rewritten first.

    ``chat``/``achat``/``stream_chat``/``astream_chat`` rewrite the text blocks of
    the last user ``ChatMessage`` and keep its ``ImageBlock``s; ``complete`` and its
    variants rewrite the prompt string.  Everything else (metadata, streaming, the
    response objects) is the wrapped LLM's own, so pass the wrapped LLM wherever
    LlamaIndex takes an LLM: a chat engine, a multimodal query engine, or (when the
    wrapped LLM supports function calling) an agent: ``chat_with_tools`` and
    ``predict_and_call`` go through the guarded ``chat`` with the wrapped LLM's own
    tool handling.

    Args:
        llm: the LLM (usually a vision-language model) that answers.
        rewriter: the core :class:`~vlmguard_plugins.Rewriter`.
        on_error: override the rewriter's failure policy for this LLM.
        allow_local_files: read ``ImageBlock(path=...)`` images from disk (see
            :mod:`llama_index_vlmguard.messages`).

    Example::

        guarded = VLMGuardLLM(llm=OpenAI(model="gpt-4o"), rewriter=rewriter)
        engine = RetrieverQueryEngine.from_args(retriever, llm=guarded, multimodal=True)
    """

    llm: SerializeAsAny[LLM] = Field(description="The LLM that receives the guarded prompts.")
    on_error: FailurePolicyName | None = Field(
        default=None, description="Failure policy override (shield, raise, passthrough, block)."
    )
    allow_local_files: bool = Field(
        default=True, description="Read ImageBlock(path=...) images from disk."
    )
    _rewriter: Rewriter = PrivateAttr()

    def __init__(self, llm: LLM, rewriter: Rewriter, **kwargs: Any) -> None:
        # Prompt formatting (predict, structured outputs) follows the wrapped LLM's settings.
        kwargs.setdefault("system_prompt", llm.system_prompt)
        kwargs.setdefault("messages_to_prompt", llm.messages_to_prompt)
        kwargs.setdefault("completion_to_prompt", llm.completion_to_prompt)
        kwargs.setdefault("callback_manager", llm.callback_manager)
        super().__init__(llm=llm, **kwargs)
        self._rewriter = rewriter

    @classmethod
    def from_backend(
        cls,
        llm: LLM,
        name: str,
        *,
        rewriter_options: dict[str, Any] | None = None,
        on_error: FailurePolicyName | None = None,
        allow_local_files: bool = True,
        **backend_options: Any,
    ) -> VLMGuardLLM:
        """Wrap ``llm`` with a rewriter on the backend ``name`` (as for ``load_backend``).

        Example::

            VLMGuardLLM.from_backend(
                vlm, "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
            )
        """
        rewriter = Rewriter(load_backend(name, **backend_options), **(rewriter_options or {}))
        return cls(
            llm=llm, rewriter=rewriter, on_error=on_error, allow_local_files=allow_local_files
        )

    @classmethod
    def class_name(cls) -> str:
        return "VLMGuardLLM"

    @property
    def rewriter(self) -> Rewriter:
        """The rewriter that guards this LLM."""
        return self._rewriter

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    # -- guarding ------------------------------------------------------------------------

    def _guard(self, messages: Sequence[ChatMessage]) -> GuardedMessages:
        return guard_messages(
            messages,
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
        )

    async def _aguard(self, messages: Sequence[ChatMessage]) -> GuardedMessages:
        return await aguard_messages(
            messages,
            self._rewriter,
            on_error=self.on_error,
            allow_local_files=self.allow_local_files,
        )

    def _guard_prompt(self, prompt: str) -> str:
        result = self._rewriter.rewrite(RewriteRequest(text=prompt), on_error=self.on_error)
        dispatch_rewrite(result)
        return result.prompt

    async def _aguard_prompt(self, prompt: str) -> str:
        result = await self._rewriter.arewrite(RewriteRequest(text=prompt), on_error=self.on_error)
        dispatch_rewrite(result)
        return result.prompt

    # -- chat ----------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.llm.chat(self._guard(messages).messages, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self.llm.achat((await self._aguard(messages)).messages, **kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # The rewrite happens before the first token is asked for, so a failure under
        # the `raise` policy surfaces here, not in the middle of the stream.
        return self.llm.stream_chat(self._guard(messages).messages, **kwargs)

    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return await self.llm.astream_chat((await self._aguard(messages)).messages, **kwargs)

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
        return self._function_calling_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )
