"""LangChain integration for vlmguard-plugins.

``VLMGuardRewriter`` is a Runnable that rewrites the user's prompt (given its
images) before a vision-language model sees it::

    from langchain_vlmguard import VLMGuardRewriter

    guard = VLMGuardRewriter.from_backend(
        "openai", model="vlmguard-r1", base_url="http://localhost:8000/v1"
    )
    chain = prompt | guard | vision_chat_model
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .content import METADATA_KEY, get_rewrite_result
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
    "get_rewrite_result",
]
