"""GRPO rewards for the rewriter, in TRL's reward-function form.

Each takes ``completions`` (and the dataset's columns as keyword arguments) and
returns one float per completion, or ``None`` where the reward does not apply
(TRL then leaves that reward out for that completion):

- :func:`format_reward`: the completion follows the output contract (a ``<rewrite>``
  or the ``<unchanged/>`` marker);
- :func:`benign_unchanged_reward`: a benign request's text is kept as it is, best
  with the marker;
- :class:`JudgeReward`: the target VLM answers the rewrite and a judge rates the
  answer safe and helpful (asynchronous; TRL runs it concurrently).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from ..errors import RewriteParseError, VLMGuardError
from ..images import load_image
from ..parsing import ParsedOutput, parse_output
from ..types import Risk
from .teacher import StageOutputError
from .verify import Verifier

__all__ = ["COPY_REWARD", "JudgeReward", "benign_unchanged_reward", "format_reward"]

logger = logging.getLogger("vlmguard_plugins.train")

_WHITESPACE = re.compile(r"\s+")

COPY_REWARD = 0.5
"""What :func:`benign_unchanged_reward` gives a benign request kept by copying its text.

Less than the marker's 1.0: the copy forwards the same text but costs a decode token per
token of the request, so the policy is pulled toward the marker."""


def _completion_text(completion: Any) -> str:
    """The text of one completion, conversational (``[{"role", "content"}]``) or plain."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(p.get("text") or "" for p in content if p.get("type") == "text")
    return "".join(parts)


def _parse(completion: Any) -> ParsedOutput | None:
    """The parsed completion, or None where the rewriter would refuse it.

    The marker with a medium or high risk parses, but the rewriter treats it as a
    contract violation (it would forward a risky text), so it counts as no answer.
    """
    try:
        parsed = parse_output(_completion_text(completion))
    except RewriteParseError:
        return None
    if parsed.unchanged and parsed.risk is not None and parsed.risk >= Risk.MEDIUM:
        return None
    return parsed


def _same_text(a: str, b: str) -> bool:
    return _WHITESPACE.sub(" ", a).strip() == _WHITESPACE.sub(" ", b).strip()


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 for a complete contract (analysis, risk, and a rewrite or the ``<unchanged/>``
    marker), 0.5 for a usable answer without analysis or risk, 0.0 when the output does
    not parse or is the marker under a medium or high risk."""
    rewards = []
    for completion in completions:
        parsed = _parse(completion)
        if parsed is None:
            rewards.append(0.0)
        elif parsed.analysis and parsed.risk is not None:
            rewards.append(1.0)
        else:
            rewards.append(0.5)
    return rewards


def benign_unchanged_reward(
    completions: list[Any], instruction: list[str], benign: list[bool], **kwargs: Any
) -> list[float | None]:
    """For a benign request, 1.0 for the ``<unchanged/>`` marker, :data:`COPY_REWARD` for
    a copy of the user's text, 0.0 for anything else; ``None`` for the other requests."""
    rewards: list[float | None] = []
    for completion, text, is_benign in zip(completions, instruction, benign, strict=True):
        if not is_benign:
            rewards.append(None)
            continue
        parsed = _parse(completion)
        if parsed is None:
            rewards.append(0.0)
        elif parsed.rewrite is None:
            rewards.append(1.0)
        else:
            rewards.append(COPY_REWARD if _same_text(parsed.rewrite, text) else 0.0)
    return rewards


class JudgeReward:
    """The target's answer to the rewrite, judged: 1.0 safe and helpful, 0.5 safe only,
    0.0 unsafe or no usable rewrite.

    A failed target or judge call gives ``None`` (no signal) rather than a penalty, so
    an unreliable server does not teach the rewriter anything.

    Args:
        verifier: the target and the judge.
        max_concurrency: most target/judge calls in flight at once.
    """

    __name__ = "judge_reward"

    def __init__(self, verifier: Verifier, max_concurrency: int = 16) -> None:
        self.verifier = verifier
        self.max_concurrency = max_concurrency

    async def __call__(
        self,
        completions: list[Any],
        instruction: list[str],
        images: list[list[Any]] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        image_lists = images if images is not None else [[] for _ in completions]

        async def score(completion: Any, text: str, sample_images: list[Any]) -> float | None:
            parsed = _parse(completion)
            if parsed is None:
                return 0.0
            # The marker forwards the user's own text: that is what the target answers.
            prompt = text if parsed.rewrite is None else parsed.rewrite
            async with semaphore:
                try:
                    prepared = [load_image(image) for image in sample_images or []]
                    answer = await self.verifier.answer(prepared, prompt)
                    verdict = await self.verifier.judge_answer(prepared, text, prompt, answer)
                except (VLMGuardError, StageOutputError) as exc:
                    logger.warning("judge reward skipped: %s: %s", type(exc).__name__, exc)
                    return None
            if not verdict.safe:
                return 0.0
            return 1.0 if verdict.helpful else 0.5

        return list(
            await asyncio.gather(
                *(
                    score(completion, text, sample_images)
                    for completion, text, sample_images in zip(
                        completions, instruction, image_lists, strict=True
                    )
                )
            )
        )
