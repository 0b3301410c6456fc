"""nemoguardrails-vlmguard: NeMo Guardrails rails that rewrite multimodal prompts.

Enable both in a guardrails configuration folder::

    # config.yml
    import_paths:
      - nemoguardrails_vlmguard
    passthrough: true
    rails:
      input:
        flows:
          - vlmguard rewrite input
      tool_input:                # a conversation that ends in tool results
        flows:
          - vlmguard check tool input
    custom_data:
      vlmguard:                  # vlmguard_plugins.RewriterSettings, plus use_history
        backend: openai
        model: vlmguard-r1
        base_url: http://localhost:8000/v1

    # config.py
    from nemoguardrails_vlmguard import register

    def init(app):
        register(app)
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
