"""An inspect_ai model provider over our transformers backend: local VLMs as targets.

Use ``vlmguard-transformers/<hub id or folder>`` wherever inspect takes a model::

    inspect eval ... --model vlmguard-transformers/Qwen/Qwen2.5-VL-7B-Instruct \\
        -M device=cuda -M max_batch_size=16
    vlmguard bench run --target vlmguard-transformers//models/tiny ...

Model args (``-M``) go to :class:`~vlmguard_plugins.backends.transformers.TransformersBackend`
(``device``, ``dtype``, ``max_batch_size``, ``max_wait_ms``...).  Concurrent samples are
gathered into batches by the backend.

Sampling follows inspect's ``GenerateConfig``: ``temperature`` (none or 0: greedy),
``top_p`` (none: the model's own generation config) and ``seed``, handed to the
backend's :class:`~vlmguard_plugins.backends.base.GenerationRequest`; the backend
generates a seeded request alone, after seeding torch, so the same seed gives the same
answer whatever else is running.  The provider registers itself when this module is
imported; the ``inspect_ai`` entry point of the package imports it for the ``inspect``
command line.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, modelapi
from inspect_ai.tool import ToolChoice, ToolInfo

from ..backends.transformers import TransformersBackend
from .generation import DEFAULT_MAX_TOKENS, generate_output

__all__ = [
    "PROVIDER_NAME",
    "TransformersModelAPI",
    "vlmguard_transformers",
]

PROVIDER_NAME = "vlmguard-transformers"


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
        self.backend = TransformersBackend(model_name, **model_args)

    # inspect's own ModelAPI.generate signature; the work is shared in generate_output.
    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        return await generate_output(self.backend, self.model_name, input, config)

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        # Enough concurrent samples to fill the backend's batches.
        return 2 * self.backend.batcher.max_batch_size


@modelapi(name=PROVIDER_NAME)
def vlmguard_transformers() -> type[ModelAPI]:
    """The ``vlmguard-transformers`` provider."""
    return TransformersModelAPI
