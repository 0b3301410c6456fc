"""The ``vlmguard-openai/<service>/<model>`` inspect provider: a served model.

Targets and judges served by an OpenAI-compatible server (vLLM, SGLang, Ollama...)
are reached through this package's own OpenAI backend (retries, failover, image
encoding); the server is read from ``<SERVICE>_BASE_URL`` and ``<SERVICE>_API_KEY``,
as inspect's ``openai-api`` provider does, without needing the ``openai>=3.4`` SDK
that provider asks for (``llama-index-llms-openai`` needs ``openai<3``, so both
cannot share one environment).
"""

from __future__ import annotations

import os
from typing import Any

from inspect_ai.model import ChatMessage, GenerateConfig, ModelAPI, ModelOutput, modelapi
from inspect_ai.tool import ToolChoice, ToolInfo

from ..backends.openai import OpenAIBackend
from ..errors import ConfigurationError
from .generation import DEFAULT_MAX_TOKENS, generate_output

__all__ = ["DEFAULT_MAX_TOKENS", "OPENAI_PROVIDER", "OpenAICompatibleModelAPI"]

OPENAI_PROVIDER = "vlmguard-openai"


class OpenAICompatibleModelAPI(ModelAPI):
    """inspect ``ModelAPI`` for ``vlmguard-openai/<service>/<model>``: a served model.

    The server is ``base_url`` if inspect is given one, else ``<SERVICE>_BASE_URL``
    (several replicas comma-separated); the key ``<SERVICE>_API_KEY``.  Model args
    (``-M``) go to :class:`~vlmguard_plugins.backends.openai.OpenAIBackend`
    (``timeout_s``, ``max_retries``, ``image_max_side``, ``extra_body``...).
    """

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        service, _, served = model_name.partition("/")
        if not service or not served:
            raise ConfigurationError(
                f"{OPENAI_PROVIDER} models are named {OPENAI_PROVIDER}/<service>/<model>, "
                f"got {OPENAI_PROVIDER}/{model_name}"
            )
        prefix = service.upper().replace("-", "_")
        base_url = base_url or os.environ.get(f"{prefix}_BASE_URL")
        if not base_url:
            raise ConfigurationError(
                f"no server for {OPENAI_PROVIDER}/{model_name}: set {prefix}_BASE_URL "
                f"(or pass --base-url {service}=URL)"
            )
        api_key = api_key or os.environ.get(f"{prefix}_API_KEY")
        super().__init__(model_name, base_url, api_key, [], config)
        self.served_model = served
        self.backend = OpenAIBackend(
            served, base_url=base_url.split(","), api_key=api_key, **model_args
        )

    # inspect's own ModelAPI.generate signature; the work is shared in generate_output.
    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        return await generate_output(self.backend, self.served_model, input, config)

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return self.backend.max_concurrency


@modelapi(name=OPENAI_PROVIDER)
def vlmguard_openai() -> type[ModelAPI]:
    """The ``vlmguard-openai`` provider."""
    return OpenAICompatibleModelAPI
