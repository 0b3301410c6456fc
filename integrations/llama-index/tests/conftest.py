"""Fixtures for the LlamaIndex integration tests: LlamaIndex's own mocks, and event capture."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent
from llama_index.core.llms.mock import MockLLMWithChatMemoryOfLastCall
from llama_index_vlmguard import VLMGuardRewriteEvent
from PIL import Image


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
    return MockLLMWithChatMemoryOfLastCall(is_chat_model=True)


@pytest.fixture
def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "orange").save(buffer, format="PNG")
    return buffer.getvalue()
