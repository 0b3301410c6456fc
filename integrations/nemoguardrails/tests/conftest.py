"""Fixtures for the NeMo Guardrails rail tests: config folders written as a user writes them."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.testing import FakeLLMModel
from nemoguardrails_vlmguard import colang_path

from vlmguard_plugins import Risk
from vlmguard_plugins.parsing import format_output

REWRITE = "Describe how to handle this kitchen knife safely, with the precautions to take."

# The shipped example configurations: the tests write config folders from them, so what
# users copy is what is tested.  Only the main model (the tests give their own) and the
# rewriter's settings change.
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "nemoguardrails"
EXAMPLE_FOLDERS = {"1.0": EXAMPLES / "config", "2.x": EXAMPLES / "config_colang2"}


def example_config(colang: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The example's ``config.yml`` for ``colang``, with ``settings`` as the rewriter's."""
    config = yaml.safe_load((EXAMPLE_FOLDERS[colang] / "config.yml").read_text())
    config.pop("models", None)
    config["custom_data"] = {"vlmguard": settings}
    return config


class RecordingLLM(FakeLLMModel):
    """NeMo's own fake main LLM, recording the exact prompt of every call."""

    def __init__(self, answer: str = "Here is a careful answer.", calls: int = 20) -> None:
        super().__init__(responses=[answer] * calls)
        self.prompts: list[Any] = []

    async def generate_async(self, prompt, *, stop=None, **kwargs):
        self.prompts.append(prompt)
        return await super().generate_async(prompt, stop=stop, **kwargs)

    @property
    def last_user_content(self) -> Any:
        """The content of the last user message of the last call (or the prompt string)."""
        prompt = self.prompts[-1]
        if isinstance(prompt, str):
            return prompt
        return [message for message in prompt if message.role.value == "user"][-1].content

    @property
    def last_messages(self) -> list[dict[str, Any]]:
        """The messages of the last call as ``{"role", "content"}`` dicts."""
        prompt = self.prompts[-1]
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}]
        return [{"role": message.role.value, "content": message.content} for message in prompt]


def scripted_output(prompt: str = REWRITE, risk: str = "medium") -> str:
    return format_output(
        "textual: asks how to use an object\nvisual: a kitchen knife\n"
        "cross-modal: usage of a blade needs safety framing",
        Risk(risk),
        prompt,
    )


@pytest.fixture
def rewrite_text() -> str:
    """The rewrite every scripted rewriter in these tests answers with."""
    return REWRITE


@pytest.fixture
def rewriter_output() -> Callable[..., str]:
    """A well-formed rewriter output (the output contract) for a given rewrite."""
    return scripted_output


@pytest.fixture(autouse=True)
def rail_on_colang_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let NeMo resolve ``nemoguardrails_vlmguard`` from this editable checkout.

    A regular install puts the module in site-packages, which NeMo already searches
    for import paths; the development install lives in the source tree instead, so its
    parent folder is added as COLANGPATH would add it.
    """
    from nemoguardrails.rails.llm import config as rails_config

    monkeypatch.setattr(
        rails_config, "colang_path_dirs", [*rails_config.colang_path_dirs, str(colang_path())]
    )


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a guardrails configuration folder the way a user would, and return it."""

    def write(
        settings: dict[str, Any] | None = None,
        *,
        colang: str = "1.0",
        extra_yml: str = "",
        config_py: str | None = "example",
        rails_co: str | None = None,
        name: str = "config",
    ) -> Path:
        """Write a folder; ``config_py`` and ``rails_co`` default to the example's files."""
        folder = tmp_path / name
        folder.mkdir()
        if settings is None:
            settings = {"backend": "scripted", "backend_options": {"outputs": [scripted_output()]}}
        body = yaml.safe_dump(example_config(colang, settings), sort_keys=False)
        (folder / "config.yml").write_text(body + textwrap.dedent(extra_yml))
        example = EXAMPLE_FOLDERS[colang]
        if config_py == "example":
            config_py = (example / "config.py").read_text()
        if config_py is not None:
            (folder / "config.py").write_text(config_py)
        if rails_co is None and (example / "rails.co").exists():
            rails_co = (example / "rails.co").read_text()
        if rails_co is not None:
            (folder / "rails.co").write_text(rails_co)
        return folder

    return write


@pytest.fixture
def make_app() -> Callable[..., tuple[LLMRails, RecordingLLM]]:
    """``LLMRails`` from a config folder, with a recording main LLM."""

    def make(folder: Path, llm: RecordingLLM | None = None) -> tuple[LLMRails, RecordingLLM]:
        llm = llm or RecordingLLM()
        return LLMRails(RailsConfig.from_path(str(folder)), llm=llm), llm

    return make


@pytest.fixture(scope="session")
def knife_part(example_images: dict[str, Path]) -> dict[str, Any]:
    """An OpenAI-style image part carrying the example knife picture as a data URL."""
    data = base64.b64encode(example_images["knife"].read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
