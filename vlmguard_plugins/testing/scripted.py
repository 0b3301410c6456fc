"""A backend that answers from a script and records every call.

``ScriptedBackend`` stands in for the rewriter model, so code built on a
:class:`~vlmguard_plugins.Rewriter` is tested without one::

    from vlmguard_plugins import Rewriter
    from vlmguard_plugins.testing import ScriptedBackend

    backend = ScriptedBackend.rewriting_to("Describe safe handling of this knife.", risk="medium")
    rewriter = Rewriter(backend=backend)
    assert rewriter.rewrite("How do I use this?").prompt.startswith("Describe safe")
    assert backend.calls[0].user_text == "How do I use this?"

It is also the ``scripted`` backend of :func:`~vlmguard_plugins.load_backend`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..backends.base import Generation, GenerationRequest
from ..images import PreparedImage
from ..parsing import format_output
from ..types import Risk

__all__ = ["Responder", "ScriptedBackend", "ScriptedCall"]

_USER_REQUEST = re.compile(r"<user_request>\n?(.*?)\n?</user_request>", re.S)

Responder = Callable[[GenerationRequest], str]


@dataclass
class ScriptedCall:
    """One call the :class:`ScriptedBackend` received."""

    request: GenerationRequest

    @property
    def user_text(self) -> str:
        """The user's (neutralised) text as placed in the rewriter prompt."""
        for message in reversed(self.request.messages):
            for part in message["content"]:
                if part.get("type") == "text" and (m := _USER_REQUEST.search(part["text"])):
                    return m.group(1)
        return ""

    @property
    def images(self) -> list[PreparedImage]:
        """The decoded images the rewriter was given, in order."""
        return self.request.images


class ScriptedBackend:
    """A backend that answers from a script and records every call.

    Args:
        outputs: answers used in order; an ``Exception`` instance in the list is
            raised instead of answered. After the last one, the last answer repeats.
        responder: alternatively, a function from the request to the answer.
        delay_s: seconds to wait before answering (to test timeouts and concurrency).

    With neither ``outputs`` nor ``responder``, every request is answered with a
    well-formed "no risk, unchanged" output that echoes the user's text.
    """

    name = "scripted"

    def __init__(
        self,
        outputs: Sequence[str | BaseException] | str | None = None,
        *,
        responder: Responder | None = None,
        delay_s: float = 0.0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        if isinstance(outputs, str):
            outputs = [outputs]
        self.outputs = list(outputs or [])
        self.responder = responder
        self.delay_s = delay_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.calls: list[ScriptedCall] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    @classmethod
    def rewriting_to(
        cls,
        prompt: str,
        *,
        risk: Risk | str = Risk.MEDIUM,
        analysis: str = "textual: scripted\nvisual: scripted\ncross-modal: scripted",
        **kwargs: object,
    ) -> ScriptedBackend:
        """A backend whose every answer rewrites the request to ``prompt``."""
        return cls([format_output(analysis, Risk(risk), prompt)], **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def echo_unchanged(request: GenerationRequest) -> str:
        """A well-formed output that leaves the user's text unchanged."""
        text = ScriptedCall(request).user_text
        return format_output("textual: none\nvisual: none\ncross-modal: none", Risk.NONE, text)

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """Record the call, then answer from the script (or raise the scripted error)."""
        index = len(self.calls)
        self.calls.append(ScriptedCall(request))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.responder is not None:
                text = self.responder(request)
            elif self.outputs:
                answer = self.outputs[min(index, len(self.outputs) - 1)]
                if isinstance(answer, BaseException):
                    raise answer
                text = answer
            else:
                text = self.echo_unchanged(request)
        finally:
            self.in_flight -= 1
        return Generation(
            text=text, prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens
        )

    async def aclose(self) -> None:
        """Mark the backend closed (``closed`` becomes true); nothing to release."""
        self.closed = True
