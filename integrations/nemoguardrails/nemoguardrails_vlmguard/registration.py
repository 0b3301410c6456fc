"""Enabling the rail on an ``LLMRails`` app: ``register(app)`` from the user's ``config.py``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlmguard_plugins import Rewriter
from vlmguard_plugins.errors import ConfigurationError

from .actions import (
    ACTION_NAME,
    RAIL_PARAM,
    TOOL_ACTION_NAME,
    vlmguard_check_tool_input,
    vlmguard_rewrite_input,
)
from .rail import VLMGuardRail
from .settings import VLMGuardSettings

if TYPE_CHECKING:
    from nemoguardrails import LLMRails  # type: ignore[import-untyped]

INPUT_FLOW = "vlmguard rewrite input"
TOOL_INPUT_FLOW = "vlmguard check tool input"


def register(app: LLMRails, rewriter: Rewriter | None = None) -> VLMGuardRail:
    """Enable the ``vlmguard rewrite input`` and ``vlmguard check tool input`` rails on ``app``.

    Call it from ``init(app)`` in the configuration's ``config.py``.  The rewriter is
    built from the ``custom_data: vlmguard:`` section of ``config.yml`` (a
    :class:`~vlmguard_plugins.RewriterSettings` plus ``use_history``) unless one is
    given; ``use_history`` is read from that section either way when it is present.
    Returns the rail (its ``rewriter`` is the one every rewrite goes through).

    Raises:
        ConfigurationError: the section is missing (and no rewriter was given), a
            setting in it is unknown or invalid, or a Colang 1.0 configuration enables
            ``vlmguard rewrite input`` without ``vlmguard check tool input``.
    """
    _check_tool_results_are_guarded(app)
    settings = _settings_or_none(app, rewriter)
    if rewriter is None:
        assert settings is not None
        rewriter = settings.build()
    rail = VLMGuardRail(rewriter=rewriter, use_history=settings.use_history if settings else True)
    app.register_action(vlmguard_rewrite_input, name=ACTION_NAME)
    app.register_action(vlmguard_check_tool_input, name=TOOL_ACTION_NAME)
    app.register_action_param(RAIL_PARAM, rail)
    return rail


def get_rail(app: LLMRails) -> VLMGuardRail:
    """The rail :func:`register` set up on ``app``."""
    rail = app.runtime.registered_action_params.get(RAIL_PARAM)
    if not isinstance(rail, VLMGuardRail):
        raise ConfigurationError("register(app) has not been called for this LLMRails app")
    return rail


def colang_path() -> Path:
    """The folder to add to ``COLANGPATH`` so ``import_paths: [nemoguardrails_vlmguard]`` resolves.

    NeMo Guardrails looks for import paths in ``site-packages`` (where a regular install
    puts this module) and in the ``COLANGPATH`` folders; an editable install needs this one.
    """
    return Path(__file__).resolve().parent.parent


def _check_tool_results_are_guarded(app: LLMRails) -> None:
    """Refuse a Colang 1.0 configuration whose tool results would pass unguarded.

    NeMo runs no input rail for a request whose last message is a tool message, and in
    passthrough mode it forwards that message, images included, to the main model.
    Whoever writes the messages decides whether they end in one, so the input rail
    alone would leave a way around it; the tool input rail closes it.
    """
    config = app.config
    if config.colang_version != "1.0" or INPUT_FLOW not in config.rails.input.flows:
        return
    if TOOL_INPUT_FLOW in config.rails.tool_input.flows:
        return
    raise ConfigurationError(
        f"config.yml enables the '{INPUT_FLOW}' input rail but not the '{TOOL_INPUT_FLOW}' "
        "tool input rail: NeMo runs no input rail for a conversation that ends in tool "
        "results, so their text and images would reach the main model unseen. Add it:\n"
        f"  rails:\n    tool_input:\n      flows:\n        - {TOOL_INPUT_FLOW}"
    )


def _settings_or_none(app: LLMRails, rewriter: Rewriter | None) -> VLMGuardSettings | None:
    custom_data = app.config.custom_data or {}
    if rewriter is not None and "vlmguard" not in custom_data:
        return None
    return VLMGuardSettings.from_custom_data(custom_data)
