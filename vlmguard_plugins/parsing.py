"""Parse the rewriter's output contract into its parts.

Tolerant of what real models do (a missing closing tag, prose around the tags, a
fenced block, upper-case tags, stray whitespace); strict about what matters: without
a non-empty ``<rewrite>`` the output is a :class:`RewriteParseError`, and a rewrite
that contains the contract's own tags (an escape attempt) is one too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RewriteParseError
from .types import Risk

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?|\n?\s*```\s*$")
_THINK = re.compile(r"<think>(.*?)(?:</think>|(?=<risk>)|(?=<rewrite>)|\Z)", re.S | re.I)
_RISK = re.compile(r"<risk>\s*([a-z]+)\s*(?:</risk>)?", re.I)
_REWRITE_OPEN = re.compile(r"<rewrite>", re.I)
_REWRITE_CLOSE = re.compile(r"</rewrite>", re.I)
_CONTRACT_TAG = re.compile(r"</?\s*(think|risk|rewrite)\s*>", re.I)

_RISK_WORDS = {
    "none": Risk.NONE,
    "no": Risk.NONE,
    "safe": Risk.NONE,
    "low": Risk.LOW,
    "medium": Risk.MEDIUM,
    "moderate": Risk.MEDIUM,
    "high": Risk.HIGH,
    "severe": Risk.HIGH,
}


@dataclass(frozen=True)
class ParsedOutput:
    """The three parts of the contract. ``risk`` is None when the model gave none."""

    analysis: str
    risk: Risk | None
    rewrite: str


def _strip_fences(text: str) -> str:
    return _FENCE.sub("", text.strip()).strip()


def parse_output(raw: str) -> ParsedOutput:
    """Parse one model output.

    Raises:
        RewriteParseError: the output is empty, has no ``<rewrite>``, an empty or
            ambiguous rewrite, or a rewrite that contains contract tags.
    """
    if raw is None or not raw.strip():
        raise RewriteParseError("the rewriter returned an empty output", raw=raw)
    text = _strip_fences(raw)
    opens = list(_REWRITE_OPEN.finditer(text))
    if not opens:
        raise RewriteParseError("the rewriter's output has no <rewrite> section", raw=raw)
    if len(opens) > 1:
        raise RewriteParseError("the rewriter's output has more than one <rewrite>", raw=raw)
    start = opens[0].end()
    close = _REWRITE_CLOSE.search(text, start)
    rewrite = text[start : close.start()] if close else _strip_fences(text[start:])
    rewrite = rewrite.strip()
    if not rewrite:
        raise RewriteParseError("the rewriter's <rewrite> section is empty", raw=raw)
    if _CONTRACT_TAG.search(rewrite):
        raise RewriteParseError("the rewrite contains the output contract's own tags", raw=raw)

    head = text[: opens[0].start()]
    think = _THINK.search(head)
    analysis = think.group(1).strip() if think else ""
    risk_match = _RISK.search(head) or _RISK.search(text[close.end() :] if close else "")
    risk = _RISK_WORDS.get(risk_match.group(1).lower()) if risk_match else None
    return ParsedOutput(analysis=analysis, risk=risk, rewrite=rewrite)


def format_output(analysis: str, risk: Risk, rewrite: str) -> str:
    """Render the output contract (used for training targets and scripted outputs)."""
    return (
        f"<think>\n{analysis.strip()}\n</think>\n<risk>{risk.value}</risk>\n"
        f"<rewrite>\n{rewrite.strip()}\n</rewrite>"
    )
