"""Parse the rewriter's output contract into its parts.

Tolerant of what real models do (a missing closing tag, prose around the tags, a
fenced block, upper-case tags, stray whitespace); strict about what matters: without
a non-empty ``<rewrite>`` or the ``<unchanged/>`` marker the output is a
:class:`RewriteParseError`, and so is a rewrite that contains the contract's own tags
(an escape attempt), an output with both a rewrite and the marker, and a marker with
no ``<risk>`` before it.

Everything here runs in time linear in the output's length, whatever the output: a
model's answer is untrusted text (it may be steered by the user), and a regex with
repetitions next to each other backtracked quadratically on tens of thousands of
spaces. The regexes left are literal tags, alternatives of literals, or a single
greedy repetition with nothing after it, each matched or searched once over any span;
the rest is a hand scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import RewriteParseError
from .types import Risk

__all__ = [
    "UNCHANGED_MARKER",
    "ParsedOutput",
    "format_output",
    "parse_output",
]

_SPACES = re.compile(r"\s*")
_FENCE_INFO = re.compile(r"[\w-]*")  # the language after an opening fence: ```xml
_WORD = re.compile(r"[a-z]+", re.I)
_THINK_OPEN = re.compile(r"<think>", re.I)
# Where the analysis ends: ``</think>``, or the next section when that is missing (it is
# read before the only ``<rewrite>``, so ``<risk>`` is the one other section to meet).
_THINK_END = re.compile(r"</think>|<risk>", re.I)
_RISK_OPEN = re.compile(r"<risk>", re.I)
_THINK_CLOSE = re.compile(r"</think\s*>", re.I)
_REWRITE_OPEN = re.compile(r"<rewrite>", re.I)
_REWRITE_CLOSE = re.compile(r"</rewrite>", re.I)
_CONTRACT_NAME = re.compile(r"think|risk|rewrite|unchanged", re.I)
_UNCHANGED_NAME = re.compile(r"unchanged", re.I)

UNCHANGED_MARKER = "<unchanged/>"
"""The answer that leaves the user's text as it is, in place of a ``<rewrite>`` section.

A benign request costs the same few tokens whatever its length, where a copy of the
text would cost as many tokens as the text. ``<unchanged />`` and ``<unchanged>`` (any
case) are read as the marker too."""

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
    """The three parts of the contract. ``risk`` is None when the model gave none.

    ``rewrite`` is None, and ``unchanged`` true, when the model answered with the
    :data:`UNCHANGED_MARKER`: the user's text goes on as it is.
    """

    analysis: str
    risk: Risk | None
    rewrite: str | None
    unchanged: bool = False


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


@dataclass(frozen=True)
class _Tag:
    start: int
    end: int
    closing: bool
    name: str


def _contract_tags(text: str) -> Iterator[_Tag]:
    """The contract's tags in ``text``, left to right: ``<think>``, ``</ risk >``,
    ``<REWRITE>``, ``<unchanged/>`` and the like.

    A tag is ``<``, an optional ``/``, optional whitespace, a contract name (any case),
    optional whitespace, an optional ``/`` and whitespace, and ``>``. What is read after
    one ``<`` (whitespace, a name, slashes) holds no other ``<``, so each character is
    read a bounded number of times.
    """
    length = len(text)
    start = text.find("<")
    while start != -1:
        i = start + 1
        closing = i < length and text[i] == "/"
        if closing:
            i += 1
        i = _skip_spaces(text, i)
        name = _CONTRACT_NAME.match(text, i)
        if name is not None:
            i = _skip_spaces(text, name.end())
            if i < length and text[i] == "/":
                i = _skip_spaces(text, i + 1)
            if i < length and text[i] == ">":
                i += 1
                yield _Tag(start, i, closing, name.group())
        start = text.find("<", i)


def _has_contract_tag(text: str) -> bool:
    return next(_contract_tags(text), None) is not None


def _unchanged_marker(text: str) -> _Tag | None:
    """The first ``<unchanged/>`` (or ``<unchanged>``) in ``text``; a closing one is not it."""
    for tag in _contract_tags(text):
        if not tag.closing and _UNCHANGED_NAME.fullmatch(tag.name):
            return tag
    return None


def _analysis(head: str) -> str:
    """The text after the first ``<think>``, up to ``</think>`` or the next section."""
    opening = _THINK_OPEN.search(head)
    if opening is None:
        return ""
    end = _THINK_END.search(head, opening.end())
    return head[opening.end() : end.start() if end else len(head)].strip()


def _risk_word(text: str, *, analysis_first: bool = True) -> str | None:
    """The word after the first ``<risk>`` outside the analysis that has one, or None.

    A ``<risk>`` inside ``<think>`` is the model reasoning (or quoting), not its verdict:
    only what follows the last ``</think>`` counts.
    """
    end_of_think = _last_think_close(text) if analysis_first else 0
    for opening in _RISK_OPEN.finditer(text, end_of_think):
        word = _WORD.match(text, _skip_spaces(text, opening.end()))
        if word is not None:
            return word.group()
    return None


def _last_think_close(text: str) -> int:
    """The position just after the last ``</think>`` (any case), or 0 when there is none."""
    end = 0
    for match in _THINK_CLOSE.finditer(text):
        end = match.end()
    return end


def parse_output(raw: str) -> ParsedOutput:
    """Parse one model output, in time linear in its length.

    Raises:
        RewriteParseError: the output is empty, has neither a ``<rewrite>`` nor the
            ``<unchanged/>`` marker, an empty or ambiguous rewrite, a rewrite that
            contains contract tags, both a rewrite and the marker, or a marker with no
            ``<risk>`` before it.
    """
    if raw is None or not raw.strip():
        raise RewriteParseError("the rewriter returned an empty output", raw=raw)
    text = _strip_fences(raw)
    opening = _REWRITE_OPEN.search(text)
    if opening is None:
        marker = _unchanged_marker(text)
        if marker is None:
            raise RewriteParseError(
                "the rewriter's output has no <rewrite> section (nor the <unchanged/> marker)",
                raw=raw,
            )
        return _parse_unchanged(text, marker, raw)
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

    if _unchanged_marker(text) is not None:
        # Which one the model meant cannot be known: sending either could be wrong.
        raise RewriteParseError(
            "the rewriter's output has both a <rewrite> and the <unchanged/> marker", raw=raw
        )

    head = text[: opening.start()]
    word = _risk_word(head)
    if word is None and close is not None:  # a verdict given after the rewrite
        word = _risk_word(text[close.end() :], analysis_first=False)
    risk = _RISK_WORDS.get(word.lower()) if word else None
    return ParsedOutput(analysis=_analysis(head), risk=risk, rewrite=rewrite)


def _parse_unchanged(text: str, marker: _Tag, raw: str) -> ParsedOutput:
    # Only a verdict given before the marker counts: a marker met inside the analysis
    # (or an answer cut short there) must not forward the text as if judged safe.
    head = text[: marker.start]
    word = _risk_word(head)
    risk = _RISK_WORDS.get(word.lower()) if word else None
    if risk is None:
        raise RewriteParseError(
            "the rewriter's <unchanged/> marker has no <risk> verdict before it", raw=raw
        )
    return ParsedOutput(analysis=_analysis(head), risk=risk, rewrite=None, unchanged=True)


def format_output(analysis: str, risk: Risk, rewrite: str | None) -> str:
    """Render the output contract (used for training targets and scripted outputs).

    ``rewrite=None`` renders the :data:`UNCHANGED_MARKER` in place of the
    ``<rewrite>`` section.

    Raises:
        ValueError: the marker with a medium or high risk, which the contract forbids.
    """
    head = f"<think>\n{analysis.strip()}\n</think>\n<risk>{risk.value}</risk>\n"
    if rewrite is None:
        if risk >= Risk.MEDIUM:
            raise ValueError(f"a {risk.value}-risk request cannot be left unchanged")
        return head + UNCHANGED_MARKER
    return f"{head}<rewrite>\n{rewrite.strip()}\n</rewrite>"
