"""An inspect_ai model provider over our transformers backend: local VLMs as targets.

Use ``vlmguard-transformers/<hub id or folder>`` wherever inspect takes a model::

    inspect eval ... --model vlmguard-transformers/Qwen/Qwen2.5-VL-7B-Instruct \\
        -M device=cuda -M max_batch_size=16
    vlmguard bench run --target vlmguard-transformers//models/tiny ...

Model args (``-M``) go to :class:`~vlmguard_plugins.backends.transformers.TransformersBackend`
(``device``, ``dtype``, ``max_batch_size``, ``max_wait_ms``...).  Concurrent samples are
gathered into batches by the backend.

Sampling follows inspect's ``GenerateConfig``: ``temperature`` (none or 0: greedy),
``top_p`` (none: the model's own generation config) and ``seed``.  A seeded request is
generated alone, after seeding torch, so the same seed gives the same answer whatever
else is running.  The provider registers itself when this module
is imported; the ``inspect_ai`` entry point of the package imports it for the
``inspect`` command line.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from ..backends.base import Generation, GenerationRequest
from ..backends.transformers import TransformersBackend
from .conversation import backend_messages

__all__ = [
    "PROVIDER_NAME",
    "SampledRequest",
    "SamplingTransformersBackend",
    "TransformersModelAPI",
    "vlmguard_transformers",
]

PROVIDER_NAME = "vlmguard-transformers"
DEFAULT_MAX_TOKENS = 512


@dataclass
class SampledRequest(GenerationRequest):
    """A :class:`GenerationRequest` with the nucleus and seed settings of a benchmark target."""

    top_p: float | None = None
    seed: int | None = None


class SamplingTransformersBackend(TransformersBackend):
    """The transformers backend, honouring ``top_p`` and ``seed`` of :class:`SampledRequest`.

    ``top_p`` is set on the model's generation config for the batch; a seeded request
    is batched alone and generated right after ``torch.manual_seed(seed)``, both under
    one lock so that no other batch moves the random state in between.
    """

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._sampling_lock = threading.Lock()
        self._alone = itertools.count()
        self.batcher.group_key = self._group_key

    def _group_key(self, request: GenerationRequest) -> Hashable:
        top_p = getattr(request, "top_p", None)
        seed = getattr(request, "seed", None)
        # A seeded answer must not depend on its batch mates (padding changes the logits).
        alone = None if seed is None else next(self._alone)
        return (request.max_new_tokens, request.temperature, tuple(request.stop), top_p, alone)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one batch with its sampling settings (blocking)."""
        if not requests:
            return []
        import torch

        top_p = getattr(requests[0], "top_p", None)
        seed = getattr(requests[0], "seed", None)
        with self._sampling_lock:
            config = self.model.generation_config
            default_top_p = config.top_p
            if top_p is not None:
                config.top_p = top_p
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                return super().generate_batch(requests)
            finally:
                config.top_p = default_top_p


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
        self.backend = SamplingTransformersBackend(model_name, **model_args)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        messages = await asyncio.to_thread(backend_messages, input)
        request = SampledRequest(
            messages=messages,
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=config.temperature or 0.0,
            stop=list(config.stop_seqs or []),
            top_p=config.top_p,
            seed=config.seed,
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
