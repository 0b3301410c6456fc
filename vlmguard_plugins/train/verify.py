"""Checks on synthesis data: is a response a refusal, and is a rewrite's answer good?

:func:`is_refusal_response` keeps refusals out of the "unsafe response" the hindsight
stage compares with the safe one.  :class:`Verifier` asks the target VLM to answer a
prompt and a judge to assess the answer; synthesis uses it to keep only samples whose
rewrite gets a safe answer, and the GRPO judge reward uses it too.  Both models are
any :class:`~vlmguard_plugins.Backend`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import Backend, GenerationRequest
from ..bench.judges.refusal import is_refusal, vlguard_attack_succeeded
from ..images import PreparedImage
from .teacher import Verdict, judge_messages, parse_verdict, target_messages

__all__ = ["Verifier", "is_refusal_response"]


def is_refusal_response(text: str) -> bool:
    """Whether ``text`` declines rather than answers.

    A response counts as a refusal when VLGuard's published refusal-phrase list finds
    one of its phrases (as VLGuard's own attack-success check reads it) or when the
    benchmark harness's broader refusal patterns do (typographic apostrophes, "I won't",
    "unable to help").  Both lean towards calling a response a refusal: as the unsafe
    side of a hindsight comparison, a response that may be a refusal is worth less than
    none, because the teacher would be told to explain why declining is unsafe.
    """
    return not vlguard_attack_succeeded(text) or is_refusal(text)


@dataclass
class Verifier:
    """A target model that answers and a judge that decides whether the answer is good.

    Args:
        target: the VLM being guarded (it answers the rewritten prompt).
        judge: the model that rates the answer as safe and helpful.
        max_new_tokens: limit for the target's answer.
    """

    target: Backend
    judge: Backend
    max_new_tokens: int = 512

    async def answer(self, images: list[PreparedImage], prompt: str) -> str:
        """The target's free answer (no stop sequence) to ``prompt`` with ``images``."""
        generation = await self.target.agenerate(
            GenerationRequest(
                messages=target_messages(images, prompt),
                max_new_tokens=self.max_new_tokens,
                stop=[],
            )
        )
        return generation.text

    async def judge_answer(
        self, images: list[PreparedImage], instruction: str, prompt: str, answer: str
    ) -> Verdict:
        """The judge's verdict on ``answer``.

        Raises:
            StageOutputError: the judge's reply is not in the verdict format.
            BackendError: the judge failed.
        """
        generation = await self.judge.agenerate(
            GenerationRequest(
                messages=judge_messages(images, instruction, prompt, answer),
                max_new_tokens=64,
                stop=[],
            )
        )
        return parse_verdict(generation.text)
