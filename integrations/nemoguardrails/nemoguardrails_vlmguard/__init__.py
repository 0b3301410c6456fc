"""nemoguardrails-vlmguard: NeMo Guardrails rails that rewrite multimodal prompts.

Enable them in a guardrails configuration folder: copy the repository's
``examples/nemoguardrails/config/`` (Colang 1.0; ``config_colang2/`` for Colang 2.x).
Its ``config.yml``, commented line by line, turns the rails on and holds the
rewriter's settings under ``custom_data.vlmguard``; its ``config.py`` calls
:func:`register`.  The guide is ``docs/nemoguardrails.md``.
"""

from __future__ import annotations

from .actions import (
    ACTION_NAME,
    TOOL_ACTION_NAME,
    vlmguard_check_tool_input,
    vlmguard_rewrite_input,
)
from .conversation import conversation_from_events, conversation_from_tool_messages
from .rail import UserMessage, VLMGuardRail, VLMGuardRewrite
from .registration import (
    INPUT_FLOW,
    TOOL_INPUT_FLOW,
    add_to_colang_path,
    colang_path,
    get_rail,
    register,
)
from .settings import SETTINGS_KEY, VLMGuardSettings

# An editable install lives outside site-packages, where NeMo looks for import paths:
# make ``import_paths: [nemoguardrails_vlmguard]`` resolve without COLANGPATH.
add_to_colang_path()

FLOW_NAME = INPUT_FLOW
"""The input rail's flow name, in Colang 1.0 and 2.x alike."""

TOOL_FLOW_NAME = TOOL_INPUT_FLOW
"""The tool input rail's flow name (Colang 1.0 only: NeMo runs tool input rails only there)."""

__all__ = [
    "ACTION_NAME",
    "FLOW_NAME",
    "SETTINGS_KEY",
    "TOOL_ACTION_NAME",
    "TOOL_FLOW_NAME",
    "UserMessage",
    "VLMGuardRail",
    "VLMGuardRewrite",
    "VLMGuardSettings",
    "add_to_colang_path",
    "colang_path",
    "conversation_from_events",
    "conversation_from_tool_messages",
    "get_rail",
    "register",
    "vlmguard_check_tool_input",
    "vlmguard_rewrite_input",
]
