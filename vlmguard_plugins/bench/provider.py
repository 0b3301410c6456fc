"""An inspect_ai model provider over our transformers backend: local VLMs as targets.

Use ``vlmguard-transformers/<hub id or folder>`` wherever inspect takes a model::

    inspect eval ... --model vlmguard-transformers/Qwen/Qwen2.5-VL-7B-Instruct \\
        -M device=cuda -M max_batch_size=16
    vlmguard bench run --target vlmguard-transformers//models/tiny ...

Model args (``-M``) go to :class:`~vlmguard_plugins.backends.transformers.TransformersBackend`
(``device``, ``dtype``, ``max_batch_size``, ``max_wait_ms``...).  Concurrent samples are
gathered into batches by the backend.  The provider registers itself when this module
is imported; the ``inspect_ai`` entry point of the package imports it for the
``inspect`` command line.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ContentImage,
    ContentText,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from ..backends.base import GenerationRequest
from ..images import load_image

PROVIDER_NAME = "vlmguard-transformers"
DEFAULT_MAX_TOKENS = 512


def _parts(message: ChatMessage) -> list[tuple[str, Any]]:
    if isinstance(message.content, str):
        return [("text", message.content)]
    parts: list[tuple[str, Any]] = []
    for part in message.content:
        if isinstance(part, ContentImage):
            parts.append(("image", part.image))
        elif isinstance(part, ContentText):
            parts.append(("text", part.text))
    return parts


def _to_backend_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    converted = []
    for message in messages:
        # Tool results have no place in a plain VLM chat template: they are sent as user text.
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        content = [
            {"type": "image", "image": load_image(value)}
            if kind == "image"
            else {"type": "text", "text": value}
            for kind, value in _parts(message)
        ]
        converted.append({"role": role, "content": content})
    return converted


class TransformersModelAPI(ModelAPI):
    """inspect ``ModelAPI`` that generates with a local :class:`TransformersBackend`."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        from ..backends.transformers import TransformersBackend

        self.backend = TransformersBackend(model_name, **model_args)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        messages = await asyncio.to_thread(_to_backend_messages, input)
        request = GenerationRequest(
            messages=messages,
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=config.temperature or 0.0,
            stop=list(config.stop_seqs or []),
        )
        generation = await self.backend.agenerate(request)
        output = ModelOutput.from_content(model=self.model_name, content=generation.text)
        output.usage = ModelUsage(
            input_tokens=generation.prompt_tokens,
            output_tokens=generation.completion_tokens,
            total_tokens=generation.prompt_tokens + generation.completion_tokens,
        )
        return output

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        # Enough concurrent samples to fill the backend's batches.
        return 2 * getattr(self.backend.batcher, "max_batch_size", 8)


@modelapi(name=PROVIDER_NAME)
def vlmguard_transformers() -> type[ModelAPI]:
    """The ``vlmguard-transformers`` provider."""
    return TransformersModelAPI
