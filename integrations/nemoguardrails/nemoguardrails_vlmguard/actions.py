"""The rails' NeMo Guardrails actions: ``vlmguard_rewrite_input`` and ``vlmguard_check_tool_input``.

Colang 1.0 calls the input rail's with
``execute vlmguard_rewrite_input(user_message=$user_message)``, Colang 2.x with
``await VlmguardRewriteInputAction(user_message=$user_message)``.  The tool input
rail's, ``execute vlmguard_check_tool_input(tool_messages=$tool_messages)``, is
Colang 1.0 only: NeMo runs tool input rails only there.

NeMo also loads this file on its own when the module's folder is in ``import_paths``,
so it imports the package by absolute name.
"""

from __future__ import annotations

from typing import Any

from nemoguardrails.actions import action  # type: ignore[import-untyped]

from nemoguardrails_vlmguard.rail import VLMGuardRail, VLMGuardRewrite
from vlmguard_plugins.errors import ConfigurationError

ACTION_NAME = "vlmguard_rewrite_input"
TOOL_ACTION_NAME = "vlmguard_check_tool_input"
RAIL_PARAM = "vlmguard_rail"
"""The action parameter under which :func:`~nemoguardrails_vlmguard.register` stores the rail."""


@action(name=ACTION_NAME, is_system_action=True)
async def vlmguard_rewrite_input(
    user_message: Any = None,
    events: list[dict[str, Any]] | None = None,
    vlmguard_rail: VLMGuardRail | None = None,
) -> VLMGuardRewrite:
    """Rewrite the user's message so the main LLM answers safely and still helpfully.

    ``events`` (NeMo's event stream) gives the earlier turns: their images are always
    checked, their text too unless ``use_history`` is off.  Returns a
    :class:`~nemoguardrails_vlmguard.VLMGuardRewrite`: ``user_message`` (the rewritten
    text with the image parts in place), ``analysis``, ``risk``, ``action`` and
    ``is_blocked`` (true for a ``block`` result and for input the guard cannot check,
    whose ``error_type`` names why).
    """
    return await _rail(vlmguard_rail).rewrite(user_message, events)


@action(name=TOOL_ACTION_NAME, is_system_action=True)
async def vlmguard_check_tool_input(
    tool_messages: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    vlmguard_rail: VLMGuardRail | None = None,
) -> VLMGuardRewrite:
    """Guard a conversation that ends in tool results, before the main LLM reads them.

    ``tool_messages`` (NeMo's ``$tool_messages``: every tool message of the request)
    and ``events`` (the earlier turns) make the conversation; the tool messages' text
    and images are read by the rewriter and never changed.  Returns a
    :class:`~nemoguardrails_vlmguard.VLMGuardRewrite` whose ``user_message`` is the
    user's request with the rewrite in place of its text, and whose ``is_blocked``
    is true for a ``block`` result and for input the guard cannot check.
    """
    return await _rail(vlmguard_rail).check_tool_messages(tool_messages, events)


def _rail(vlmguard_rail: VLMGuardRail | None) -> VLMGuardRail:
    if vlmguard_rail is None:
        raise ConfigurationError(
            "the vlmguard rail is not set up: call nemoguardrails_vlmguard.register(app) "
            "from init(app) in the configuration's config.py"
        )
    return vlmguard_rail
