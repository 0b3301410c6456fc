"""Fixtures for the LiteLLM guardrail's tests: a stub VLM, a rewriter server, a real proxy."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# LiteLLM fetches its model cost map from the network when imported, unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402
import yaml  # type: ignore[import-untyped]  # noqa: E402
from litellm_vlmguard.testing import LiteLLMProxy  # noqa: E402
from PIL import Image  # noqa: E402

from vlmguard_plugins import Risk
from vlmguard_plugins.backends.base import GenerationRequest
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend

EXAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "examples" / "litellm" / "config.yaml"
REWRITER_KEY = "rewriter-key"
REWRITTEN = "Explain how to handle this kitchen knife safely, without describing harm."
VLM_ANSWER = "Hold the knife by its handle and cut away from your body."
VLM_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
REWRITER_MODEL = "vlmguard-r1"
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


@dataclass
class RewriterScript:
    """What the rewriter server answers next: a rewrite at a risk, or the user's text as is."""

    prompt: str | None = REWRITTEN
    risk: Risk = Risk.MEDIUM
    seen: list[GenerationRequest] = field(default_factory=list)

    def __call__(self, request: GenerationRequest) -> str:
        self.seen.append(request)
        if self.prompt is None:
            return ScriptedBackend.echo_unchanged(request)
        return format_output("textual: t\nvisual: v\ncross-modal: c", self.risk, self.prompt)

    def reset(self) -> None:
        self.prompt, self.risk = REWRITTEN, Risk.MEDIUM
        self.seen.clear()


@pytest.fixture(scope="module")
def rewriter_script() -> RewriterScript:
    return RewriterScript()


@pytest.fixture(scope="module")
def vlm_server() -> Iterator[ChatCompletionServer]:
    """The stub VLM behind the proxy: records what it received, answers one sentence."""
    with ChatCompletionServer(responder=lambda request: VLM_ANSWER, model=VLM_MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def rewriter_server(rewriter_script: RewriterScript) -> Iterator[ChatCompletionServer]:
    """The rewriter model, served over HTTP as vLLM would serve it."""
    backend = ScriptedBackend(responder=rewriter_script)
    with ChatCompletionServer(backend, model=REWRITER_MODEL) as server:
        yield server


@pytest.fixture(scope="session")
def vlm_answer() -> str:
    return VLM_ANSWER


@pytest.fixture(scope="session")
def rewritten() -> str:
    return REWRITTEN


def _png_data_url(color: str = "orange", size: tuple[int, int] = (40, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="session")
def make_image() -> Callable[..., str]:
    """Makes a small PNG ``data:`` URL: ``make_image(color="orange", size=(40, 30))``."""
    return _png_data_url


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    vlm_server: ChatCompletionServer,
    rewriter_server: ChatCompletionServer,
) -> Iterator[LiteLLMProxy]:
    """A LiteLLM proxy running ``examples/litellm/config.yaml``: the stub VLM behind the guardrail.

    The example's guardrail is on by default, blocks on rewriter failures
    (``on_error: block``) and on verdicts at ``high`` risk; its addresses and the
    rewriter's key come from the environment, as the example documents.
    """
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    env = {
        "VLM_API_BASE": vlm_server.base_url,
        "VLMGUARD_REWRITER_BASE_URL": rewriter_server.base_url,
        "VLMGUARD_REWRITER_API_KEY": REWRITER_KEY,
    }
    with LiteLLMProxy(
        config,
        workdir=tmp_path_factory.mktemp("litellm-proxy"),
        pythonpath=[PACKAGE_DIR],
        env=env,
    ) as running:
        yield running
