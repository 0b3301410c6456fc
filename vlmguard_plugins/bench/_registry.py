"""inspect_ai entry point: registers the ``vlmguard-transformers`` and ``vlmguard-openai``
providers and the tasks.

With it, ``inspect eval vlmguard_plugins/figstep -T data_dir=... --model
vlmguard-transformers/<model>`` works from inspect's own command line.
"""

from __future__ import annotations

from . import openai_provider, provider, tasks  # noqa: F401

# Imported for what importing does (registering with inspect_ai); nothing to export.
__all__: list[str] = []
