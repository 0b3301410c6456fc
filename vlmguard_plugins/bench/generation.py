"""One inspect generate call through one of our backends: the providers' shared step."""

from __future__ import annotations

import asyncio

from inspect_ai.model import ChatMessage, GenerateConfig, ModelOutput, ModelUsage

from ..backends.base import Backend, GenerationRequest
from .conversation import backend_messages

__all__ = ["DEFAULT_MAX_TOKENS", "generate_output"]

DEFAULT_MAX_TOKENS = 512


async def generate_output(
    backend: Backend, model: str, input: list[ChatMessage], config: GenerateConfig
) -> ModelOutput:
    """Generate ``input`` with ``backend`` under inspect's ``config``; the output names ``model``.

    Sampling follows ``config``: no temperature means greedy, no ``max_tokens``
    :data:`DEFAULT_MAX_TOKENS`; token usage comes from the backend's counts.
    """
    # Decoding the images is CPU work: off the event loop.
    messages = await asyncio.to_thread(backend_messages, input)
    generation = await backend.agenerate(
        GenerationRequest(
            messages=messages,
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=config.temperature or 0.0,
            stop=list(config.stop_seqs or []),
            top_p=config.top_p,
            seed=config.seed,
        )
    )
    output = ModelOutput.from_content(model=model, content=generation.text)
    output.usage = ModelUsage(
        input_tokens=generation.prompt_tokens,
        output_tokens=generation.completion_tokens,
        total_tokens=generation.prompt_tokens + generation.completion_tokens,
    )
    return output
