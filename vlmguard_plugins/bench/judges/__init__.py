"""Judges: the published judge prompts, their reply parsers and the refusal-phrase checks.

Everything here is plain Python (no inspect_ai), so the scorers stay thin and the
parsing and arithmetic can be checked on their own.
"""

from __future__ import annotations

from .parsers import (
    JudgeParseError,
    PaperVerdict,
    mmsb_verdict,
    parse_helpfulness,
    parse_mmvet_score,
    parse_paper_verdict,
    parse_safe_unsafe,
    siuo_effectiveness_vote,
    siuo_safety_vote,
    vlguard_choice,
)
from .refusal import VLGUARD_REJECT_LIST, is_refusal, vlguard_attack_succeeded

__all__ = [
    "VLGUARD_REJECT_LIST",
    "JudgeParseError",
    "PaperVerdict",
    "is_refusal",
    "mmsb_verdict",
    "parse_helpfulness",
    "parse_mmvet_score",
    "parse_paper_verdict",
    "parse_safe_unsafe",
    "siuo_effectiveness_vote",
    "siuo_safety_vote",
    "vlguard_attack_succeeded",
    "vlguard_choice",
]
