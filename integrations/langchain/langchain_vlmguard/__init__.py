"""LangChain integration for vlmguard-plugins.

``VLMGuardRewriter`` is a Runnable that rewrites the user's prompt (given its
images) before a vision-language model sees it::

    from langchain_vlmguard import VLMGuardRewriter

    guard = VLMGuardRewriter.from_backend(
        "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
    )
    chain = guard | vision_chat_model

It converts LangChain messages to the core's conversation
(:mod:`langchain_vlmguard.conversation`) and lets the core guard them.

``VLMGuardMiddleware`` puts the guard inside an agent's loop
(``create_agent(model, tools, middleware=[guard])``); it needs the ``langchain``
package (``pip install "langchain-vlmguard[agents]"``) and is imported on first use, so
the Runnable works with ``langchain-core`` alone.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .conversation import METADATA_KEY, from_conversation, get_rewrite_result, to_conversation
from .runnable import REWRITE_EVENT, GuardInput, VLMGuardRewriter
from .speculative import (
    SPECULATIVE_KEY,
    SpeculativeOutcome,
    VLMGuardSpeculativeChatModel,
    speculative_outcome,
)

if TYPE_CHECKING:
    from .middleware import GuardRecord, GuardVerdict, VLMGuardMiddleware, VLMGuardState

# Names served by the middleware module, which imports ``langchain`` (an optional extra).
_AGENT_NAMES = frozenset({"GuardRecord", "GuardVerdict", "VLMGuardMiddleware", "VLMGuardState"})


def __getattr__(name: str) -> Any:
    if name in _AGENT_NAMES:
        try:
            from . import middleware
        except ImportError as exc:
            raise ImportError(
                f"{name} needs the langchain package (LangChain 1.x agents): "
                "pip install 'langchain-vlmguard[agents]'"
            ) from exc
        return getattr(middleware, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


try:
    __version__ = version("langchain-vlmguard")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "METADATA_KEY",
    "REWRITE_EVENT",
    "SPECULATIVE_KEY",
    "GuardInput",
    "GuardRecord",
    "GuardVerdict",
    "VLMGuardMiddleware",
    "SpeculativeOutcome",
    "VLMGuardRewriter",
    "VLMGuardSpeculativeChatModel",
    "VLMGuardState",
    "__version__",
    "from_conversation",
    "get_rewrite_result",
    "speculative_outcome",
    "to_conversation",
]
