"""inspect_ai entry point: registers the ``vlmguard-transformers`` provider and the tasks.

With it, ``inspect eval vlmguard_plugins/figstep -T data_dir=... --model
vlmguard-transformers/<model>`` works from inspect's own command line.
"""

from __future__ import annotations

from . import provider, tasks  # noqa: F401
