"""The guardrail's settings: its ``litellm_params`` in the proxy's ``config.yaml``.

Every :class:`~vlmguard_plugins.RewriterSettings` option keeps its name (``backend``,
``model``, ``base_url``, ``api_key``, ``on_error``, ``timeout_s``, ``max_images``...);
the guardrail adds ``block_risk`` and ``allow_call_types``.  LiteLLM's own names are
understood where they mean the same thing: ``api_base`` for ``base_url``, ``timeout``
for ``timeout_s``, and ``os.environ/NAME`` for a key read from the environment::

    guardrails:
      - guardrail_name: vlmguard
        litellm_params:  # guardrail, mode, backend, model...: as in the package's example
          api_base: http://localhost:8000/v1
          api_key: os.environ/VLMGUARD_REWRITER_API_KEY
          on_error: block
          timeout_s: 20
          block_risk: high
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.guardrails import LitellmParams
from pydantic import Field, field_validator

from vlmguard_plugins import RewriterSettings, Risk
from vlmguard_plugins.errors import ConfigurationError

CHAT_CALL_TYPES = frozenset({"completion", "acompletion"})
"""The call types whose ``messages`` the guardrail checks (``/chat/completions``)."""

ENV_PREFIX = "os.environ/"
"""LiteLLM's spelling of a value read from an environment variable."""

_ALIASES = {"api_base": "base_url", "timeout": "timeout_s"}
"""LiteLLM's names for options the core names otherwise."""

_MODIFYING_HOOK_FLAGS = ("run_in_parallel", "scan_raw_request")
"""LiteLLM options under which a guardrail's changes to the request are discarded."""


class GuardrailSettings(RewriterSettings):
    """The rewriter, and what the guardrail does with its verdicts.

    Every :class:`~vlmguard_plugins.RewriterSettings` field means what it means there.

    Attributes:
        block_risk: refuse (HTTP 400) a request whose verdict is at or above this risk
            (``low``, ``medium`` or ``high``), instead of forwarding the rewrite; ``None``
            (default) forwards every rewrite.
        allow_call_types: LiteLLM call types (``aembedding``, ``aimage_generation``...)
            the guardrail lets through unchecked.  Chat completions are always checked;
            any other call type is refused unless listed here, because its content
            would otherwise reach a model unread.
    """

    block_risk: Risk | None = None
    allow_call_types: list[str] = Field(default_factory=list)

    @field_validator("block_risk")
    @classmethod
    def _a_risk_worth_blocking(cls, value: Risk | None) -> Risk | None:
        # Every verdict is at or above "none": it would refuse every request the
        # rewriter read, which is switching the model off, not guarding it.
        if value is Risk.NONE:
            raise ValueError(
                "'none' would refuse every request; choose low, medium or high, "
                "or leave block_risk unset to forward every rewrite"
            )
        return value

    @classmethod
    def from_litellm_params(
        cls, params: Mapping[str, Any], *, guardrail_name: str = "vlmguard"
    ) -> GuardrailSettings:
        """Settings from the guardrail's options (what LiteLLM passes to its constructor).

        Options that are LiteLLM's own (``guardrail``, ``mode``, ``default_on``, and the
        defaults LiteLLM fills in for its other guardrails) are left to LiteLLM.

        Raises:
            ConfigurationError: an unknown option, an invalid value, an ``os.environ/``
                variable that is not set, or an option that would discard the rewrite.
        """
        where = f"litellm_params of guardrail {guardrail_name!r}"
        for flag in _MODIFYING_HOOK_FLAGS:
            if params.get(flag):
                raise ConfigurationError(
                    f"{where}: {flag} is not supported: LiteLLM discards the changes of a "
                    "guardrail run that way, so the model would receive the user's text "
                    "unguarded; remove it"
                )
        options: dict[str, Any] = {}
        unknown: list[str] = []
        for name, value in params.items():
            target = _ALIASES.get(name, name)
            if target in cls.model_fields:
                if name != target and target in params:
                    continue  # the core's own name wins over LiteLLM's alias
                options[target] = _resolve_env(value, f"{where}: {name}")
            elif name not in litellm_option_names():
                unknown.append(name)
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown option {', '.join(sorted(unknown))}; known options: "
                f"{', '.join(cls.model_fields)} (and LiteLLM's api_base, timeout)"
            )
        settings = cls.from_mapping(options, where=where)
        assert isinstance(settings, GuardrailSettings)
        chat = sorted(CHAT_CALL_TYPES.intersection(settings.allow_call_types))
        if chat:
            raise ConfigurationError(
                f"{where}: allow_call_types cannot list {', '.join(chat)}: chat completions "
                "are what the guardrail checks"
            )
        return settings


@cache
def litellm_option_names() -> frozenset[str]:
    """Every option LiteLLM itself reads in a guardrail's ``litellm_params``."""
    names = set(LitellmParams.model_fields)
    names.update(inspect.signature(CustomGuardrail.__init__).parameters)
    names.discard("kwargs")
    return frozenset(names)


def _resolve_env(value: Any, where: str) -> Any:
    # LiteLLM resolves os.environ/ only for api_key and api_base, and only when the
    # guardrail comes from config.yaml; the guardrail resolves every option itself.
    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
        return value
    name = value.removeprefix(ENV_PREFIX)
    resolved = os.environ.get(name)
    if resolved is None:
        raise ConfigurationError(f"{where} reads the environment variable {name}, which is not set")
    return resolved


__all__ = ["CHAT_CALL_TYPES", "ENV_PREFIX", "GuardrailSettings", "litellm_option_names"]
