"""A rewriter whose input checks start late: to show a call does not outrun them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..conversation import Conversation, GuardedConversation
from ..images import ImageLimits
from ..rewriter import Rewriter
from .scripted import ScriptedBackend

__all__ = ["LateChecks"]


class LateChecks(Rewriter):
    """A rewriter over a :class:`ScriptedBackend` whose checks begin once ``begun()`` holds.

    ``begun`` says whether the model was called; the checks begin then, or after
    ``wait_s`` at the latest.  A call that did not wait for the checks would certainly
    reach the model first.
    """

    def __init__(
        self,
        begun: Callable[[], bool],
        image_limits: ImageLimits | None = None,
        *,
        wait_s: float = 0.3,
    ) -> None:
        super().__init__(ScriptedBackend(), image_limits=image_limits)
        self.begun = begun
        self.wait_s = wait_s

    async def aguard(self, conversation: Conversation, **kwargs: Any) -> GuardedConversation:
        """Wait for ``begun()`` (or ``wait_s``), then guard as :class:`Rewriter` does."""
        deadline = time.monotonic() + self.wait_s
        while not self.begun() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return await super().aguard(conversation, **kwargs)
