"""Test doubles for vlmguard-plugins, and for your own tests.

* :class:`ScriptedBackend` answers from a script and records every call, standing in
  for the rewriter model (also the ``scripted`` backend of ``load_backend``);
* :func:`make_tiny_model` writes a random-weight Qwen2.5-VL offline in seconds, to run
  the real model path;
* :class:`ChatCompletionServer` is a real OpenAI-compatible server on loopback that
  records what it received and injects faults (:class:`RateLimited`,
  :class:`ServerError`, :class:`SlowAnswer`, :class:`BrokenStream`...);
* :class:`ImageServer` serves images (or any bytes) over HTTP on loopback, with the
  standard library alone;
* :func:`run_in_thread` serves any ASGI app (the gateway) on a free loopback port;
* :class:`Startable` is the servers' ``with`` protocol (start on entry, stop on exit),
  for test servers of your own;
* :mod:`vlmguard_plugins.testing.offline` is a pytest plugin that fails any test that
  connects past loopback.

The servers need the ``server`` extra (``pip install 'vlmguard-plugins[server]'``);
they are imported on first use, so the scripted backend works without it::

    from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, make_tiny_model

The training pipeline's doubles are in :mod:`vlmguard_plugins.testing.training`; an
example script with its rewriter and VLM servers in :mod:`vlmguard_plugins.testing.examples`;
a rewriter whose checks start late in :mod:`vlmguard_plugins.testing.late_checks`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._lifecycle import Startable
from .faults import (
    BrokenStream,
    ErrorStatus,
    Fault,
    HeldStream,
    MalformedJSON,
    RateLimited,
    ServerError,
    SlowAnswer,
    Unauthorized,
)
from .image_server import ImageServer, Route
from .received import ReceivedRequest
from .scripted import Responder, ScriptedBackend, ScriptedCall

if TYPE_CHECKING:
    from ..tiny_model import make_tiny_model
    from .chat_server import ChatCompletionServer
    from .threaded import ServerThread, dead_base_url, run_in_thread

__all__ = [
    "BrokenStream",
    "ChatCompletionServer",
    "ErrorStatus",
    "Fault",
    "HeldStream",
    "ImageServer",
    "MalformedJSON",
    "RateLimited",
    "ReceivedRequest",
    "Responder",
    "Route",
    "ScriptedBackend",
    "ScriptedCall",
    "ServerError",
    "ServerThread",
    "SlowAnswer",
    "Startable",
    "Unauthorized",
    "dead_base_url",
    "make_tiny_model",
    "run_in_thread",
]

# Imported when first asked for: the servers need the `server` extra, and the tiny
# model's builder needs torch and transformers when it runs.
_LAZY = {
    "make_tiny_model": "..tiny_model",
    "ChatCompletionServer": ".chat_server",
    "ServerThread": ".threaded",
    "dead_base_url": ".threaded",
    "run_in_thread": ".threaded",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
