"""Ask the target VLM to answer a prompt and a judge to assess the answer.

Used by synthesis (keep only samples whose rewrite gets a safe answer) and by the
GRPO judge reward.  Both models are any :class:`~vlmguard_plugins.Backend`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import Backend, GenerationRequest
from ..images import PreparedImage
from .teacher import Verdict, judge_messages, parse_verdict, target_messages


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
