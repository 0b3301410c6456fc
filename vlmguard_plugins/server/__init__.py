"""The OpenAI-compatible guard gateway (``vlmguard serve``).

Point any OpenAI client at the gateway: each chat request's messages go through the
core guard (every text and image of every turn checked, the last user message's text
rewritten), then to the upstream VLM server, streaming or not.  The ``mode`` setting
runs the guard in shadow (record only) or speculative (call the upstream while guarding)
mode instead; ``audit_log`` writes every decision as a JSON line.
Needs the ``server`` extra: ``pip install 'vlmguard-plugins[server]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app, serve
    from .config import GatewaySettings

__all__ = ["GatewaySettings", "create_app", "serve"]

_EXPORTS = {"create_app": ".app", "serve": ".app", "GatewaySettings": ".config"}


def __getattr__(name: str) -> Any:
    # Imported on first use so that `vlmguard --help` does not load FastAPI.
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
