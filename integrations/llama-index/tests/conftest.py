"""Fixtures for the LlamaIndex integration tests: LlamaIndex's own mocks, and event capture."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    MessageRole,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.llms.mock import MockLLM, MockLLMWithChatMemoryOfLastCall
from llama_index_vlmguard import VLMGuardRewriteEvent
from PIL import Image
from pydantic import Field


class EventRecorder(BaseEventHandler):
    """Keeps every instrumentation event LlamaIndex dispatches."""

    events: list[Any] = []

    @classmethod
    def class_name(cls) -> str:
        return "EventRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)

    @property
    def rewrites(self) -> list[VLMGuardRewriteEvent]:
        return [e for e in self.events if isinstance(e, VLMGuardRewriteEvent)]

    @property
    def embedded_texts(self) -> list[str]:
        """Every text the embedding model was asked to embed (queries and documents)."""
        return [text for e in self.events if isinstance(e, EmbeddingEndEvent) for text in e.chunks]


@pytest.fixture
def events() -> Iterator[EventRecorder]:
    recorder = EventRecorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(recorder)
    yield recorder
    root.event_handlers.remove(recorder)


@pytest.fixture
def vlm() -> MockLLMWithChatMemoryOfLastCall:
    """The VLM behind the guard: LlamaIndex's mock chat model that remembers its last call."""
    return MockLLMWithChatMemoryOfLastCall(max_tokens=None, is_chat_model=True)


@pytest.fixture
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


class RecordingLLM(MockLLM):
    """A chat VLM that keeps the messages of every call and answers with ``answer``.

    A completion call is recorded as one user message holding the prompt.
    """

    calls: list[list[ChatMessage]] = Field(default_factory=list, exclude=True)
    answer: str = "ANSWER"

    @classmethod
    def class_name(cls) -> str:
        return "RecordingLLM"

    def _respond(self, messages: Any) -> ChatResponse:
        self.calls.append(list(messages))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=self.answer))

    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._respond(messages)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._respond([ChatMessage(role=MessageRole.USER, content=prompt)])
        return CompletionResponse(text=self.answer)

    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        return self.complete(prompt, formatted, **kwargs)

    async def achat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return self._respond(messages)

    def stream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseGen:
        response = self._respond(messages)
        response.delta = self.answer

        def stream() -> ChatResponseGen:
            yield response

        return stream()

    async def astream_chat(self, messages: Any, **kwargs: Any) -> ChatResponseAsyncGen:
        response = self._respond(messages)
        response.delta = self.answer

        async def stream() -> ChatResponseAsyncGen:
            yield response

        return stream()


@pytest.fixture
def make_recording_vlm() -> Callable[[], RecordingLLM]:
    """Makes chat VLMs that record every call (engines call their LLM more than once)."""
    return lambda: RecordingLLM(max_tokens=None, is_chat_model=True)


@pytest.fixture
def recording_vlm(make_recording_vlm: Callable[[], RecordingLLM]) -> RecordingLLM:
    return make_recording_vlm()
