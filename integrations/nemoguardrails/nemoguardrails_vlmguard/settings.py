"""The rail's settings: the ``custom_data: vlmguard:`` section of a user's ``config.yml``.

The section is a :class:`~vlmguard_plugins.RewriterSettings`, so every option has the
name it has everywhere else in vlmguard-plugins (the CLI, the gateway, the LangChain
and LlamaIndex adapters); the rail adds one key of its own, ``use_history``.
Example::

    custom_data:
      vlmguard:
        backend: openai                  # or transformers, or any registered backend
        model: vlmguard-r1
        base_url: http://localhost:8000/v1
        on_error: shield                 # shield | raise | passthrough | block
        timeout_s: 30
        use_history: true                # the rail's own key
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlmguard_plugins import RewriterSettings
from vlmguard_plugins.errors import ConfigurationError

SETTINGS_KEY = "vlmguard"
"""The key under ``custom_data`` that holds the rail's settings."""

SETTINGS_PATH = f"custom_data.{SETTINGS_KEY}"
"""Where the settings live in ``config.yml``, as error messages name it."""


class VLMGuardSettings(RewriterSettings):
    """How the rail builds its :class:`~vlmguard_plugins.Rewriter`, and how it reads history.

    Every :class:`~vlmguard_plugins.RewriterSettings` field (``backend``, ``model``,
    ``base_url``, ``on_error``, ``timeout_s``, ``max_images``, ``allow_remote_images``,
    ``allowed_image_hosts``, ``unsupported_content``, ...) means what it means there.

    Attributes:
        use_history: give the rewriter the text of the earlier turns of the
            conversation.  With ``false`` the earlier turns' text passes unread, but
            their images are still given to the rewriter: in ``passthrough`` mode NeMo
            sends the whole conversation, images included, to the main model.
    """

    use_history: bool = True

    @classmethod
    def from_custom_data(cls, custom_data: Mapping[str, Any] | None) -> VLMGuardSettings:
        """Read the ``vlmguard`` section of ``custom_data``; a clear error when missing or wrong.

        Raises:
            ConfigurationError: no section, or a setting that is unknown or invalid
                (named as ``custom_data.vlmguard.<key>``).
        """
        section = (custom_data or {}).get(SETTINGS_KEY)
        if section is None:
            raise ConfigurationError(
                "config.yml has no 'custom_data: vlmguard:' section; add one naming the "
                "rewriter (at least 'backend' and 'model'), or pass a Rewriter to "
                "register(app, rewriter=...)"
            )
        if not isinstance(section, Mapping):
            raise ConfigurationError(
                f"'{SETTINGS_PATH}' in config.yml must be a mapping of settings"
            )
        # Checked here rather than by pydantic so the message lists this model's keys
        # (use_history included) and names each unknown key where it is in config.yml.
        unknown = [str(key) for key in section if key not in cls.model_fields]
        if unknown:
            names = ", ".join(f"{SETTINGS_PATH}.{key}" for key in unknown)
            raise ConfigurationError(
                f"unknown setting {names} in config.yml; known settings: "
                f"{', '.join(cls.model_fields)}"
            )
        settings = cls.from_mapping(section, where=f"'{SETTINGS_PATH}' settings in config.yml")
        assert isinstance(settings, VLMGuardSettings)
        return settings


__all__ = ["SETTINGS_KEY", "SETTINGS_PATH", "VLMGuardSettings"]
