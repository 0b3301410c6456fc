"""A test double for LangChain agents: a scripted chat model that can call tools.

Use it where ``create_agent`` needs a model and the replies, tool calls included, are
known in advance::

    from langchain_vlmguard.testing import ToolCallingFakeChatModel

    model = ToolCallingFakeChatModel(messages=iter([AIMessage(content="done")]))
    agent = create_agent(model, tools=[...], middleware=[VLMGuardMiddleware(...)])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import Field

__all__ = ["ToolCallingFakeChatModel"]


class ToolCallingFakeChatModel(GenericFakeChatModel):
    """LangChain's ``GenericFakeChatModel``, made usable by ``create_agent``.

    None of LangChain's fake chat models implement ``bind_tools`` (the agent binds its
    tools before every call), and ``GenericFakeChatModel`` cannot stream a reply that is
    only tool calls.  The replies here are scripted, tool calls included, so binding
    returns the model itself, and a streamed reply ends with its tool calls as chunks.
    ``received`` keeps the messages of every call as the model got them (callbacks
    report images in a tracing format instead).
    """

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """The model itself: its scripted replies already carry their tool calls."""
        return self

    # The methods keep BaseChatModel's own signatures, as every LangChain chat model.
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.received.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._generate(messages, stop=stop, **kwargs).generations[0].message
        assert isinstance(reply, AIMessage) and isinstance(reply.content, str)
        words = reply.content.split(" ") if reply.content else []
        for index, word in enumerate(words):
            token = word if index == len(words) - 1 else word + " "
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=token, id=reply.id))
            if run_manager:
                run_manager.on_llm_new_token(token, chunk=chunk)
            yield chunk
        if reply.tool_calls:
            calls = [
                tool_call_chunk(
                    name=call["name"], args=json.dumps(call["args"]), id=call["id"], index=i
                )
                for i, call in enumerate(reply.tool_calls)
            ]
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", id=reply.id, tool_call_chunks=calls)
            )
