"""An example script and the two loopback servers it talks to: a rewriter and a VLM.

The adapters' tests run the shipped examples against real HTTP servers on 127.0.0.1
and assert what each server received::

    with rewriter_server(REWRITTEN) as rewriter, vlm_server(ANSWER, model=VLM) as vlm:
        load_example(path, "chain_example").main([..., "--vlm-base-url", vlm.base_url])
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from types import ModuleType

from ..types import Risk
from .chat_server import ChatCompletionServer
from .scripted import ScriptedBackend

__all__ = [
    "REWRITER_MODEL",
    "example_argv",
    "file_data_url",
    "load_example",
    "rewriter_server",
    "vlm_server",
]

REWRITER_MODEL = "vlmguard-r1"
"""The model name :func:`rewriter_server` serves."""


def load_example(path: Path, name: str) -> ModuleType:
    """The example script at ``path``, imported as module ``name`` (examples are no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the example {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rewriter_server(rewritten: str, *, risk: Risk | str = Risk.MEDIUM) -> ChatCompletionServer:
    """A rewriter server whose every verdict rewrites to ``rewritten`` at ``risk``; not started."""
    backend = ScriptedBackend.rewriting_to(rewritten, risk=risk)
    return ChatCompletionServer(backend, model=REWRITER_MODEL)


def vlm_server(answer: str, *, model: str) -> ChatCompletionServer:
    """A VLM server serving ``model`` that answers ``answer`` to everything; not started."""
    return ChatCompletionServer(responder=lambda request: answer, model=model)


def file_data_url(path: Path) -> str:
    """The PNG file at ``path`` as a ``data:`` URL, as a client sends it inline."""
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def example_argv(
    question: str,
    image: Path,
    rewriter: ChatCompletionServer,
    vlm: ChatCompletionServer,
    *flags: str,
) -> list[str]:
    """An example's command line: ``question`` and ``image`` to ``vlm`` through ``rewriter``.

    The examples share these options; ``flags`` adds the example's own.
    """
    return [
        question,
        "--image",
        str(image),
        "--rewriter-base-url",
        rewriter.base_url,
        "--vlm-base-url",
        vlm.base_url,
        "--vlm-model",
        vlm.model,
        *flags,
    ]
