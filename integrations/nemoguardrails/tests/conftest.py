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

CONFIG_PY = """\
from nemoguardrails_vlmguard import register


def init(app):
    register(app)
"""

COLANG1_YML = """\
import_paths:
  - nemoguardrails_vlmguard
passthrough: true
rails:
  input:
    flows:
      - vlmguard rewrite input
  tool_input:
    flows:
      - vlmguard check tool input
custom_data:
  vlmguard:
{settings}
"""

COLANG2_YML = """\
colang_version: "2.x"
custom_data:
  vlmguard:
{settings}
"""

COLANG2_RAILS = """\
import core
import guardrails
import nemoguardrails_vlmguard

flow input rails $input_text
  vlmguard rewrite input

flow main
  activate vlmguard llm response
"""


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


def yaml_settings(settings: dict[str, Any]) -> str:
    """The ``vlmguard:`` settings as YAML, indented under ``custom_data: vlmguard:``."""
    return textwrap.indent(yaml.safe_dump(settings, sort_keys=False), "    ").rstrip("\n")


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
        config_py: str | None = CONFIG_PY,
        rails_co: str | None = None,
        name: str = "config",
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        template = COLANG2_YML if colang == "2.x" else COLANG1_YML
        if settings is None:
            settings = {"backend": "scripted", "backend_options": {"outputs": [scripted_output()]}}
        body = template.format(settings=yaml_settings(settings))
        (folder / "config.yml").write_text(body + textwrap.dedent(extra_yml))
        if config_py is not None:
            (folder / "config.py").write_text(config_py)
        if rails_co is None and colang == "2.x":
            rails_co = COLANG2_RAILS
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
