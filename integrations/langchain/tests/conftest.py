"""Fixtures for the LangChain integration's tests: images, a recording callback handler."""

from __future__ import annotations

import base64
import io
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_vlmguard import VLMGuardRewriter
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.testing import ScriptedBackend

REWRITTEN = "Explain how to handle this kitchen knife safely, without describing harm."
ANALYSIS = "textual: asks how to use it\nvisual: a kitchen knife\ncross-modal: violent intent"


class RecordingHandler(BaseCallbackHandler):
    """Records what each chat model received and every custom event."""

    def __init__(self) -> None:
        self.received: list[list[BaseMessage]] = []
        self.events: list[tuple[str, Any, UUID]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.received.extend(messages)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


@pytest.fixture
def recorder() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def image_b64() -> str:
    """A 40x30 PNG as bare base64."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "orange").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def rewritten() -> str:
    """The text the scripted rewriter model rewrites every request to."""
    return REWRITTEN


@pytest.fixture
def backend() -> ScriptedBackend:
    """A rewriter model that rewrites every request to REWRITTEN, at medium risk."""
    return ScriptedBackend.rewriting_to(REWRITTEN, risk="medium", analysis=ANALYSIS)


@pytest.fixture
def guard(backend: ScriptedBackend) -> VLMGuardRewriter:
    return VLMGuardRewriter(rewriter=Rewriter(backend=backend))
