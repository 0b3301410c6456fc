"""nemoguardrails-vlmguard: a NeMo Guardrails input rail that rewrites multimodal prompts.

Enable it in a guardrails configuration folder::

    # config.yml
    import_paths:
      - nemoguardrails_vlmguard
    passthrough: true
    rails:
      input:
        flows:
          - vlmguard rewrite input
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

from .actions import ACTION_NAME, vlmguard_rewrite_input
from .conversation import conversation_from_events
from .rail import UserMessage, VLMGuardRail, VLMGuardRewrite
from .registration import colang_path, get_rail, register
from .settings import SETTINGS_KEY, VLMGuardSettings

FLOW_NAME = "vlmguard rewrite input"
"""The input rail's flow name, in Colang 1.0 and 2.x alike."""

__all__ = [
    "ACTION_NAME",
    "FLOW_NAME",
    "SETTINGS_KEY",
    "UserMessage",
    "VLMGuardRail",
    "VLMGuardRewrite",
    "VLMGuardSettings",
    "colang_path",
    "conversation_from_events",
    "get_rail",
    "register",
    "vlmguard_rewrite_input",
]
