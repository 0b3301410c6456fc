"""Enabling the rail on an ``LLMRails`` app: ``register(app)`` from the user's ``config.py``."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

_COPIES_MESSAGES = "__vlmguard_copies_messages__"
"""Marks the ``generate_async`` that :func:`register` put on an app, so it wraps once."""


def register(app: LLMRails, rewriter: Rewriter | None = None) -> VLMGuardRail:
    """Enable the ``vlmguard rewrite input`` and ``vlmguard check tool input`` rails on ``app``.

    Call it from ``init(app)`` in the configuration's ``config.py``.  The rewriter is
    built from the ``custom_data: vlmguard:`` section of ``config.yml`` (a
    :class:`~vlmguard_plugins.RewriterSettings` plus ``use_history``) unless one is
    given; ``use_history`` is read from that section either way when it is present.
    Returns the rail (its ``rewriter`` is the one every rewrite goes through).

    It also makes ``app.generate_async`` (which ``generate``, ``stream_async`` and
    NeMo's server go through) work on a deep copy of ``messages``: NeMo's passthrough
    mode writes the rewrite into the last user message of the list it is given, so
    without the copy a caller that keeps its history would send the rewrite, not what
    the user wrote, on the next turn.

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
    _keep_callers_messages(app)
    return rail


def _keep_callers_messages(app: LLMRails) -> None:
    """Make ``app.generate_async`` hand NeMo a deep copy of the caller's ``messages``.

    NeMo keeps the list it is given as the raw request and, in passthrough mode,
    assigns the input rails' ``$user_message`` to its last user message's
    ``content`` (``nemoguardrails/actions/llm/generation.py`` and
    ``actions/v2_x/generation.py``): the caller's own dict.  No rail can stop that,
    so the copy is made before NeMo sees the list.
    """
    generate_async = app.generate_async
    if getattr(generate_async, _COPIES_MESSAGES, False):
        return

    @functools.wraps(generate_async)
    async def generate_async_on_a_copy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("messages") is not None:
            kwargs["messages"] = copy.deepcopy(kwargs["messages"])
        elif len(args) > 1 and args[1] is not None:  # generate_async(prompt, messages, ...)
            args = (args[0], copy.deepcopy(args[1]), *args[2:])
        return await generate_async(*args, **kwargs)

    setattr(generate_async_on_a_copy, _COPIES_MESSAGES, True)
    app.generate_async = generate_async_on_a_copy


def get_rail(app: LLMRails) -> VLMGuardRail:
    """The rail :func:`register` set up on ``app``."""
    rail = app.runtime.registered_action_params.get(RAIL_PARAM)
    if not isinstance(rail, VLMGuardRail):
        raise ConfigurationError("register(app) has not been called for this LLMRails app")
    return rail


def colang_path() -> str:
    """The folder that holds this module, as NeMo's ``COLANGPATH`` takes it (a ``str``).

    NeMo Guardrails resolves ``import_paths: [nemoguardrails_vlmguard]`` (and Colang
    2.x's ``import nemoguardrails_vlmguard``) against ``site-packages``, where a regular
    install puts this module, and the ``COLANGPATH`` folders.  Importing this package
    adds this folder to NeMo's search path (see :func:`add_to_colang_path`), so an
    editable install needs ``COLANGPATH`` only when nothing imports the package before
    ``RailsConfig.from_path`` (the ``nemoguardrails`` CLI and server, for example)::

        export COLANGPATH=$(python -c 'import nemoguardrails_vlmguard as m; print(m.colang_path())')
    """
    return str(Path(__file__).resolve().parent.parent)


def add_to_colang_path() -> None:
    """Add :func:`colang_path` to the folders NeMo resolves import paths against.

    NeMo reads ``COLANGPATH`` once, into ``nemoguardrails.rails.llm.config.colang_path_dirs``,
    when it is first imported; this appends to that list (once), so
    ``import_paths: [nemoguardrails_vlmguard]`` resolves from an editable install in
    this process without the variable.  Importing the package calls it.
    """
    from nemoguardrails.rails.llm import config as rails_config  # type: ignore[import-untyped]

    folder = colang_path()
    dirs = rails_config.colang_path_dirs
    if not any(_same_folder(folder, known) for known in dirs):
        dirs.append(folder)


def _same_folder(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


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
