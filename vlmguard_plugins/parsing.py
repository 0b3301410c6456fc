"""Parse the rewriter's output contract into its parts.

Tolerant of what real models do (a missing closing tag, prose around the tags, a
fenced block, upper-case tags, stray whitespace); strict about what matters: without
a non-empty ``<rewrite>`` the output is a :class:`RewriteParseError`, and a rewrite
that contains the contract's own tags (an escape attempt) is one too.

Everything here runs in time linear in the output's length, whatever the output: a
model's answer is untrusted text (it may be steered by the user), and a regex with
repetitions next to each other backtracked quadratically on tens of thousands of
spaces. The regexes left are literal tags, alternatives of literals, or a single
greedy repetition with nothing after it, each matched or searched once over any span;
the rest is a hand scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import RewriteParseError
from .types import Risk

_SPACES = re.compile(r"\s*")
_FENCE_INFO = re.compile(r"[\w-]*")  # the language after an opening fence: ```xml
_WORD = re.compile(r"[a-z]+", re.I)
_THINK_OPEN = re.compile(r"<think>", re.I)
# Where the analysis ends: ``</think>``, or the next section when that is missing (it is
# read before the only ``<rewrite>``, so ``<risk>`` is the one other section to meet).
_THINK_END = re.compile(r"</think>|<risk>", re.I)
_RISK_OPEN = re.compile(r"<risk>", re.I)
_REWRITE_OPEN = re.compile(r"<rewrite>", re.I)
_REWRITE_CLOSE = re.compile(r"</rewrite>", re.I)
_CONTRACT_NAME = re.compile(r"think|risk|rewrite", re.I)

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


def _skip_spaces(text: str, i: int) -> int:
    # A greedy repetition with nothing after it: one pass, no backtracking.
    match = _SPACES.match(text, i)
    return match.end() if match else i


def _strip_fences(text: str) -> str:
    """Strip whitespace and a Markdown fence (```lang ... ```) around ``text``."""
    text = text.strip()
    if text.startswith("```"):
        info = _FENCE_INFO.match(text, 3)
        text = text[info.end() if info else 3 :]
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


def _has_contract_tag(text: str) -> bool:
    """Whether ``text`` holds ``<think>``, ``</ risk >``, ``<REWRITE>`` and the like.

    A tag is ``<``, an optional ``/``, optional whitespace, a contract name (any case),
    optional whitespace and ``>``. The whitespace after one ``<`` holds no other
    ``<``, so each character is read a bounded number of times.
    """
    length = len(text)
    start = text.find("<")
    while start != -1:
        i = start + 1
        if i < length and text[i] == "/":
            i += 1
        i = _skip_spaces(text, i)
        name = _CONTRACT_NAME.match(text, i)
        if name is not None:
            i = _skip_spaces(text, name.end())
            if i < length and text[i] == ">":
                return True
        start = text.find("<", i)
    return False


def _analysis(head: str) -> str:
    """The text after the first ``<think>``, up to ``</think>`` or the next section."""
    opening = _THINK_OPEN.search(head)
    if opening is None:
        return ""
    end = _THINK_END.search(head, opening.end())
    return head[opening.end() : end.start() if end else len(head)].strip()


def _risk_word(text: str) -> str | None:
    """The word after the first ``<risk>`` that is followed by one, or None."""
    for opening in _RISK_OPEN.finditer(text):
        word = _WORD.match(text, _skip_spaces(text, opening.end()))
        if word is not None:
            return word.group()
    return None


def parse_output(raw: str) -> ParsedOutput:
    """Parse one model output, in time linear in its length.

    Raises:
        RewriteParseError: the output is empty, has no ``<rewrite>``, an empty or
            ambiguous rewrite, or a rewrite that contains contract tags.
    """
    if raw is None or not raw.strip():
        raise RewriteParseError("the rewriter returned an empty output", raw=raw)
    text = _strip_fences(raw)
    opening = _REWRITE_OPEN.search(text)
    if opening is None:
        raise RewriteParseError("the rewriter's output has no <rewrite> section", raw=raw)
    if _REWRITE_OPEN.search(text, opening.end()) is not None:
        raise RewriteParseError("the rewriter's output has more than one <rewrite>", raw=raw)
    start = opening.end()
    close = _REWRITE_CLOSE.search(text, start)
    rewrite = text[start : close.start()] if close else _strip_fences(text[start:])
    rewrite = rewrite.strip()
    if not rewrite:
        raise RewriteParseError("the rewriter's <rewrite> section is empty", raw=raw)
    if _has_contract_tag(rewrite):
        raise RewriteParseError("the rewrite contains the output contract's own tags", raw=raw)

    head = text[: opening.start()]
    word = _risk_word(head) or (_risk_word(text[close.end() :]) if close else None)
    risk = _RISK_WORDS.get(word.lower()) if word else None
    return ParsedOutput(analysis=_analysis(head), risk=risk, rewrite=rewrite)


def format_output(analysis: str, risk: Risk, rewrite: str) -> str:
    """Render the output contract (used for training targets and scripted outputs)."""
    return (
        f"<think>\n{analysis.strip()}\n</think>\n<risk>{risk.value}</risk>\n"
        f"<rewrite>\n{rewrite.strip()}\n</rewrite>"
    )
