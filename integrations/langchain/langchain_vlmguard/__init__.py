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
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .conversation import METADATA_KEY, from_conversation, get_rewrite_result, to_conversation
from .runnable import REWRITE_EVENT, GuardInput, VLMGuardRewriter

try:
    __version__ = version("langchain-vlmguard")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "METADATA_KEY",
    "REWRITE_EVENT",
    "GuardInput",
    "VLMGuardRewriter",
    "__version__",
    "from_conversation",
    "get_rewrite_result",
    "to_conversation",
]
