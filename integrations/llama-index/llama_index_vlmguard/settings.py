"""Building the adapters' rewriter from :class:`~vlmguard_plugins.RewriterSettings`.

Every entry point of the project describes its rewriter with the same settings, under
the same names (``backend``, ``model``, ``base_url``, ``on_error``, ``timeout_s``...),
so ``from_settings(...)`` and ``from_backend(...)`` of this package take exactly those.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from vlmguard_plugins import Rewriter, RewriterSettings, load_backend


def settings_from(settings: RewriterSettings | Mapping[str, Any]) -> RewriterSettings:
    """Validated settings from a :class:`RewriterSettings` or a mapping of its fields.

    Raises:
        ConfigurationError: an invalid or unknown setting, naming it.
    """
    if isinstance(settings, RewriterSettings):
        return settings
    return RewriterSettings.from_mapping(settings, where="rewriter settings")


def settings_from_options(backend: str, options: Mapping[str, Any]) -> RewriterSettings:
    """Settings from ``from_backend``'s flat options: a
    :class:`~vlmguard_plugins.RewriterSettings` field by its name, any other option as a
    backend option (:meth:`RewriterSettings.from_options`).

    Raises:
        ConfigurationError: an invalid setting.
    """
    return RewriterSettings.from_options(
        backend, options, where=f"settings of the {backend!r} rewriter"
    )


def build_rewriter_from_options(
    backend: str, options: Mapping[str, Any], rewriter_options: Mapping[str, Any] | None
) -> Rewriter:
    """The rewriter ``from_backend`` describes; ``rewriter_options`` is the deprecated
    spelling of the rewriter's settings (also taking ``image_limits`` and ``url_policy``
    objects), applied over the others."""
    settings = settings_from_options(backend, options)
    if rewriter_options is None:
        return settings.build()
    warnings.warn(
        "rewriter_options is deprecated: pass the settings as keyword arguments, "
        "for example from_backend(..., 'openai', model=..., timeout_s=10)",
        DeprecationWarning,
        stacklevel=3,
    )
    return Rewriter(
        load_backend(settings.backend, **settings.backend_kwargs()),
        **{**settings.rewriter_options(), **rewriter_options},
    )


__all__ = ["build_rewriter_from_options", "settings_from", "settings_from_options"]
