"""The VLMGuard-R1 paper's comparison against served models, in one call.

:func:`run_paper` runs SIUO, MM-SafetyBench and VLGuard (safety) and MM-Vet (utility)
with every defence on every target through :func:`~vlmguard_plugins.bench.run_benchmark`,
then writes the tables and plots with :func:`~vlmguard_plugins.bench.build_report`
(including the safety-versus-utility trade-off plots).  ``vlmguard bench paper`` is
its command line.

Targets and judges served by an OpenAI-compatible server (vLLM, SGLang, Ollama...)
are reached with the ``vlmguard-openai/<service>/<model>`` provider defined here: it
sends inspect's requests through this package's own OpenAI backend (retries,
failover, image encoding) and reads the server from ``<SERVICE>_BASE_URL`` and
``<SERVICE>_API_KEY``, as inspect's ``openai-api`` provider does, without needing
the ``openai>=3.4`` SDK that provider asks for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog
from inspect_ai.model import (
    ChatMessage,
    ContentImage,
    ContentText,
    GenerateConfig,
    Model,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from ..backends.base import GenerationRequest
from ..backends.openai import OpenAIBackend
from ..errors import ConfigurationError
from ..images import load_image
from ..rewriter import Rewriter
from .defenses import DEFENSES
from .report import build_report
from .run import run_benchmark

__all__ = [
    "OPENAI_PROVIDER",
    "PAPER_DEFENSES",
    "PAPER_TASKS",
    "OpenAICompatibleModelAPI",
    "PaperRun",
    "run_paper",
]

OPENAI_PROVIDER = "vlmguard-openai"
DEFAULT_MAX_TOKENS = 512

PAPER_TASKS: tuple[str, ...] = ("siuo", "mm_safetybench", "vlguard", "mmvet")
"""The paper's safety benchmarks and its utility benchmark (VLGuard: its three subsets)."""

PAPER_DEFENSES: tuple[str, ...] = DEFENSES
"""No defence, every baseline the harness has, and the rewriter."""


@dataclass
class PaperRun:
    """What :func:`run_paper` did: whether every task finished, the logs and the report."""

    success: bool
    logs: list[EvalLog]
    log_dir: Path
    report_dir: Path
    written: list[Path]


def run_paper(
    targets: Sequence[str | Model],
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    judge_model: str | Model,
    judge: str = "paper",
    tasks: Sequence[str] = PAPER_TASKS,
    defenses: Sequence[str] = PAPER_DEFENSES,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    **run_options: Any,
) -> PaperRun:
    """Run the comparison and write its report; returns a :class:`PaperRun`.

    The inspect logs go to ``<out_dir>/logs`` (running the same call again resumes an
    interrupted run) and the tables and plots to ``<out_dir>/report``; the report is
    written even when some task did not finish, from the samples that did.
    ``run_options`` go to :func:`~vlmguard_plugins.bench.run_benchmark` (``limit``,
    ``missing_images``, ``image_dirs``, ``max_connections``, ``target_args``...).
    """
    out = Path(out_dir)
    log_dir, report_dir = out / "logs", out / "report"
    success, logs = run_benchmark(
        list(tasks),
        list(targets),
        list(defenses),
        data_dir=data_dir,
        log_dir=log_dir,
        judge=judge,
        judge_model=judge_model,
        rewriter=rewriter,
        rewriter_backend=rewriter_backend,
        rewriter_args=rewriter_args,
        **run_options,
    )
    written = build_report(log_dir, report_dir)
    return PaperRun(success, logs, log_dir, report_dir, written)


# --- served models as inspect models --------------------------------------------------


def _backend_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    converted = []
    for message in messages:
        # Tool results have no place in a plain VLM chat: they are sent as user text.
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        parts = (
            [ContentText(text=message.content)]
            if isinstance(message.content, str)
            else message.content
        )
        content: list[dict[str, Any]] = []
        for part in parts:
            if isinstance(part, ContentImage):
                # The benchmark's own image files (or data URLs inspect made of them).
                content.append({"type": "image", "image": load_image(part.image)})
            elif isinstance(part, ContentText):
                content.append({"type": "text", "text": part.text})
        converted.append({"role": role, "content": content})
    return converted


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

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        # Decoding the images is CPU work: off the event loop.
        messages = await asyncio.to_thread(_backend_messages, input)
        generation = await self.backend.agenerate(
            GenerationRequest(
                messages=messages,
                max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
                temperature=config.temperature or 0.0,
                stop=list(config.stop_seqs or []),
            )
        )
        output = ModelOutput.from_content(model=self.served_model, content=generation.text)
        output.usage = ModelUsage(
            input_tokens=generation.prompt_tokens,
            output_tokens=generation.completion_tokens,
            total_tokens=generation.prompt_tokens + generation.completion_tokens,
        )
        return output

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return self.backend.max_concurrency


@modelapi(name=OPENAI_PROVIDER)
def vlmguard_openai() -> type[ModelAPI]:
    """The ``vlmguard-openai`` provider."""
    return OpenAICompatibleModelAPI
