"""vlmguard-plugins: a reasoning rewriter that guards any vision-language model.

The public API::

    from vlmguard_plugins import Rewriter, RewriteRequest, RewriteResult, Risk, load_backend

    rw = Rewriter(backend=load_backend("transformers", model="Qwen/Qwen2.5-VL-3B-Instruct"))
    res = rw.rewrite("How do I use this?", images=["knife.jpg"])
    res.prompt, res.risk, res.analysis
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .backends import Backend, Generation, GenerationRequest, available_backends, load_backend
from .conversation import Conversation, GuardedConversation, ImagePart, OtherPart, TextPart, Turn
from .errors import InputErrorReply, VLMGuardError, input_error_reply
from .images import ImageLimits, PreparedImage, load_image
from .policy import BLOCK_INSTRUCTION, SHIELD_INSTRUCTION, shield_prompt
from .prompts import SYSTEM_PROMPT
from .rewriter import Rewriter
from .settings import RewriterSettings
from .speculative import SpeculationStats, releasable, speculate, speculate_once
from .telemetry import Telemetry
from .types import FailurePolicyName, HistoryTurn, RewriteRequest, RewriteResult, Risk, Usage
from .urls import URLPolicy

try:
    __version__ = version("vlmguard-plugins")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "BLOCK_INSTRUCTION",
    "SHIELD_INSTRUCTION",
    "SYSTEM_PROMPT",
    "Backend",
    "Conversation",
    "FailurePolicyName",
    "Generation",
    "GenerationRequest",
    "GuardedConversation",
    "HistoryTurn",
    "ImageLimits",
    "ImagePart",
    "InputErrorReply",
    "OtherPart",
    "PreparedImage",
    "RewriteRequest",
    "RewriteResult",
    "Rewriter",
    "RewriterSettings",
    "Risk",
    "SpeculationStats",
    "Telemetry",
    "TextPart",
    "Turn",
    "URLPolicy",
    "Usage",
    "VLMGuardError",
    "__version__",
    "available_backends",
    "input_error_reply",
    "load_backend",
    "load_image",
    "releasable",
    "shield_prompt",
    "speculate",
    "speculate_once",
]
