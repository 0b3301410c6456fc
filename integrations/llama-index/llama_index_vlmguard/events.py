"""An instrumentation event for every rewrite, so LlamaIndex event handlers see the guard.

Attach a handler to the root dispatcher as for any LlamaIndex event::

    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    class RewriteLogger(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, VLMGuardRewriteEvent):
                print(event.result.risk, event.result.prompt)

    get_dispatcher().add_event_handler(RewriteLogger())
"""

from __future__ import annotations

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent

from vlmguard_plugins import RewriteResult

dispatcher = get_dispatcher(__name__)


class VLMGuardRewriteEvent(BaseEvent):
    """The guard rewrote (or, under its failure policy, replaced) a user's prompt.

    ``result`` is the full :class:`~vlmguard_plugins.RewriteResult`: the prompt sent
    on, the original text, the risk, the analysis and, on failure, ``fallback``.
    """

    result: RewriteResult

    @classmethod
    def class_name(cls) -> str:
        return "VLMGuardRewriteEvent"


def dispatch_rewrite(result: RewriteResult) -> None:
    """Emit a :class:`VLMGuardRewriteEvent` for ``result``."""
    dispatcher.event(VLMGuardRewriteEvent(result=result))
