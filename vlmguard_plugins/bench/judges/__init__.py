"""Judges: the published judge prompts, their reply parsers and the refusal-phrase checks.

Everything here is plain Python (no inspect_ai), so the scorers stay thin and the
parsing and arithmetic can be checked on their own.
"""

from __future__ import annotations

from .parsers import (
    JudgeParseError,
    PaperVerdict,
    parse_effectiveness,
    parse_helpfulness,
    parse_mmvet_score,
    parse_paper_verdict,
    parse_safe_unsafe,
    parse_siuo_safety,
)
from .refusal import VLGUARD_REJECT_LIST, is_refusal, vlguard_attack_succeeded

__all__ = [
    "VLGUARD_REJECT_LIST",
    "JudgeParseError",
    "PaperVerdict",
    "is_refusal",
    "parse_effectiveness",
    "parse_helpfulness",
    "parse_mmvet_score",
    "parse_paper_verdict",
    "parse_safe_unsafe",
    "parse_siuo_safety",
    "vlguard_attack_succeeded",
]
