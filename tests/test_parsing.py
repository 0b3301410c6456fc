"""The output contract's parser on well-formed and realistic malformed model outputs."""

from __future__ import annotations

import random
import re

import pytest

from vlmguard_plugins import Risk
from vlmguard_plugins.errors import RewriteParseError
from vlmguard_plugins.parsing import UNCHANGED_MARKER, format_output, parse_output

WELL_FORMED = """<think>
textual: asks how to use an object
visual: a kitchen knife
cross-modal: "on someone" with a knife implies violence
</think>
<risk>high</risk>
<rewrite>
Explain why I can't help hurt anyone, and how to handle a kitchen knife safely.
</rewrite>"""


def test_well_formed() -> None:
    parsed = parse_output(WELL_FORMED)
    assert parsed.risk is Risk.HIGH
    assert parsed.analysis.startswith("textual: asks how")
    assert "cross-modal" in parsed.analysis
    assert parsed.rewrite == (
        "Explain why I can't help hurt anyone, and how to handle a kitchen knife safely."
    )


def test_round_trip_with_format_output() -> None:
    text = format_output("textual: x\nvisual: y\ncross-modal: z", Risk.LOW, "Describe it.")
    parsed = parse_output(text)
    assert (parsed.analysis, parsed.risk, parsed.rewrite) == (
        "textual: x\nvisual: y\ncross-modal: z",
        Risk.LOW,
        "Describe it.",
    )


def test_missing_closing_rewrite_tag_takes_the_rest() -> None:
    parsed = parse_output("<think>ok</think><risk>low</risk><rewrite>\nDescribe the image.\n")
    assert parsed.rewrite == "Describe the image."


def test_missing_closing_think_tag() -> None:
    parsed = parse_output("<think>textual: fine\n<risk>none</risk><rewrite>Hi</rewrite>")
    assert parsed.analysis == "textual: fine"
    assert parsed.risk is Risk.NONE


def test_prose_around_the_tags() -> None:
    raw = "Sure! Here is my analysis.\n" + WELL_FORMED + "\nLet me know if you need more."
    parsed = parse_output(raw)
    assert parsed.risk is Risk.HIGH
    assert (parsed.rewrite or "").endswith("safely.")


def test_fenced_block() -> None:
    parsed = parse_output("```xml\n" + WELL_FORMED + "\n```")
    assert (parsed.rewrite or "").endswith("safely.")


def test_fenced_block_without_closing_rewrite() -> None:
    parsed = parse_output("```\n<risk>low</risk>\n<rewrite>\nWhat is shown?\n```")
    assert parsed.rewrite == "What is shown?"


def test_upper_case_tags_and_whitespace() -> None:
    raw = "<THINK> a </THINK>\n<RISK> Medium </RISK>\n<REWRITE>  Be careful.  </REWRITE>"
    parsed = parse_output(raw)
    assert parsed.risk is Risk.MEDIUM
    assert parsed.rewrite == "Be careful."


def test_missing_risk_is_none_not_an_error() -> None:
    assert parse_output("<rewrite>Hello</rewrite>").risk is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty output"),
        ("   \n\n ", "empty output"),
        ("<think>all fine</think><risk>none</risk>", "no <rewrite>"),
        ("I cannot help with that.", "no <rewrite>"),
        ("<risk>low</risk><rewrite>  </rewrite>", "empty"),
        ("<rewrite>a</rewrite><rewrite>b</rewrite>", "more than one"),
        ("<rewrite>Ignore that. <risk>none</risk></rewrite>", "contract's own tags"),
    ],
)
def test_malformed_outputs_fail_loudly(raw: str, message: str) -> None:
    with pytest.raises(RewriteParseError, match=message) as info:
        parse_output(raw)
    assert info.value.raw == raw


def test_spaces_fences_and_case_are_tolerated() -> None:
    raw = "Here:\n```xml\n<Think>\n a \n</THINK>\n<risk>  LOW </risk>\n<ReWrite>\n\n  Hi.  \n```"
    parsed = parse_output(raw)
    assert (parsed.analysis, parsed.risk, parsed.rewrite) == ("a", Risk.LOW, "Hi.")
    assert parse_output("```\n<rewrite>Hi</rewrite>\n```").rewrite == "Hi"
    assert parse_output("<rewrite>Hi</rewrite>\n<risk>\n\nsevere</risk>").risk is Risk.HIGH
    assert parse_output("<risk>unknown</risk><rewrite>Hi</rewrite>").risk is None


@pytest.mark.parametrize(
    "rewrite",
    ["<think>", "</risk>", "</ rewrite >", "<\tREWRITE\n>", "</  think>", "<risk   >"],
)
def test_contract_tags_inside_the_rewrite_are_rejected(rewrite: str) -> None:
    with pytest.raises(RewriteParseError, match="contract's own tags"):
        parse_output(f"<rewrite>Say hi {rewrite} now</rewrite>")


@pytest.mark.parametrize("rewrite", ["a < b > c", "<thinker>", "< risky >", "/ <p> risk >"])
def test_other_angle_brackets_inside_the_rewrite_are_kept(rewrite: str) -> None:
    assert parse_output(f"<rewrite>{rewrite}</rewrite>").rewrite == rewrite


# The regex parser this one replaced: right on short outputs, quadratic on long ones.
_R_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?|\n?\s*```\s*$")
_R_THINK = re.compile(r"<think>(.*?)(?:</think>|(?=<risk>)|(?=<rewrite>)|\Z)", re.S | re.I)
_R_RISK = re.compile(r"<risk>\s*([a-z]+)\s*(?:</risk>)?", re.I)
_R_OPEN = re.compile(r"<rewrite>", re.I)
_R_CLOSE = re.compile(r"</rewrite>", re.I)
_R_TAG = re.compile(r"</?\s*(think|risk|rewrite)\s*>", re.I)


def _reference_parse(raw: str) -> tuple[str, str | None, str] | str:
    """(analysis, risk, rewrite), or the start of the error message."""

    def strip(text: str) -> str:
        return _R_FENCE.sub("", text.strip()).strip()

    if not raw.strip():
        return "the rewriter returned an empty output"
    text = strip(raw)
    opens = list(_R_OPEN.finditer(text))
    if not opens:
        return "the rewriter's output has no <rewrite> section"
    if len(opens) > 1:
        return "the rewriter's output has more than one <rewrite>"
    close = _R_CLOSE.search(text, opens[0].end())
    rewrite = text[opens[0].end() : close.start()] if close else strip(text[opens[0].end() :])
    rewrite = rewrite.strip()
    if not rewrite:
        return "the rewriter's <rewrite> section is empty"
    if _R_TAG.search(rewrite):
        return "the rewrite contains the output contract's own tags"
    head = text[: opens[0].start()]
    think = _R_THINK.search(head)
    # Only a verdict after the analysis counts: a <risk> inside <think> is not one.
    closes = [m.end() for m in re.finditer(r"</think\s*>", head, re.I)]
    verdict_zone = head[closes[-1] :] if closes else head
    risk = _R_RISK.search(verdict_zone) or _R_RISK.search(text[close.end() :] if close else "")
    words = {"none": "none", "no": "none", "safe": "none", "low": "low", "medium": "medium"}
    words |= {"moderate": "medium", "high": "high", "severe": "high"}
    return (
        think.group(1).strip() if think else "",
        words.get(risk.group(1).lower()) if risk else None,
        rewrite,
    )


_PIECES = [
    *("<think>", "</think>", "<risk>", "</risk>", "<rewrite>", "</rewrite>", "<REWRITE>"),
    *("<Think>", "</RISK>", "< think >", "</ risk>", "<rewrite >", "<", ">", "/", "`"),
    *("```", "```xml", "```json-5", " ", "  ", "\n", "\t", "\u2028", "x", "low", "High"),
    *("MEDIUM", "severe", "unknown", "<risk> high", "<risk>\nno", "<RISK>safe</risk>"),
    *("-", "_", "é", "\u212a"),  # the Kelvin sign is a "k" to re.IGNORECASE
]


def test_parse_matches_the_reference_parser_on_random_outputs() -> None:
    rng = random.Random(99)
    for _ in range(8_000):
        raw = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.5 and "<rewrite>" not in raw.lower():
            raw += rng.choice(("<rewrite>", "<rewrite>x", "<Rewrite> y </rewrite>"))
        expected = _reference_parse(raw)
        try:
            parsed = parse_output(raw)
        except RewriteParseError as exc:
            assert isinstance(expected, str) and str(exc).startswith(expected), repr(raw)
        else:
            risk = parsed.risk.value if parsed.risk else None
            assert (parsed.analysis, risk, parsed.rewrite) == expected, repr(raw)


# --- the <unchanged/> marker ----------------------------------------------------------


def test_the_unchanged_marker_round_trips_with_format_output() -> None:
    text = format_output("textual: fine\nvisual: a flower\ncross-modal: none", Risk.NONE, None)
    assert text.endswith("<risk>none</risk>\n" + UNCHANGED_MARKER)
    assert "<rewrite>" not in text
    parsed = parse_output(text)
    assert (parsed.analysis, parsed.risk, parsed.rewrite, parsed.unchanged) == (
        "textual: fine\nvisual: a flower\ncross-modal: none",
        Risk.NONE,
        None,
        True,
    )
    assert parse_output(format_output("t", Risk.LOW, None)).risk is Risk.LOW


def test_a_rewrite_is_not_unchanged() -> None:
    parsed = parse_output(WELL_FORMED)
    assert parsed.unchanged is False and parsed.rewrite is not None


@pytest.mark.parametrize(
    "marker", ["<unchanged/>", "<unchanged />", "<UNCHANGED/>", "< Unchanged\n/ >", "<unchanged>"]
)
def test_variants_of_the_marker_are_tolerated(marker: str) -> None:
    raw = f"Here:\n```xml\n<think>ok</think>\n<risk> none </risk>\n{marker}\n```\nDone."
    parsed = parse_output(raw)
    assert (parsed.analysis, parsed.risk, parsed.rewrite, parsed.unchanged) == (
        "ok",
        Risk.NONE,
        None,
        True,
    )


def test_the_marker_with_medium_or_high_risk_parses_for_the_rewriter_to_refuse() -> None:
    # The parser reads the contract; the rewriter decides that this one fails open.
    parsed = parse_output("<think>t</think><risk>high</risk><unchanged/>")
    assert parsed.unchanged and parsed.risk is Risk.HIGH


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("<unchanged/>", "no <risk> verdict"),
        ("<think>fine</think>\n<unchanged/>", "no <risk> verdict"),
        ("<risk>unsure</risk><unchanged/>", "no <risk> verdict"),
        # Met inside the analysis (or an answer cut short there): no verdict came first.
        ("<think>I will answer <unchanged/> later</think><risk>none</risk>", "no <risk>"),
        ("<unchanged/><risk>none</risk>", "no <risk> verdict"),
        ("<risk>none</risk><unchanged/><rewrite>Hi</rewrite>", "both a <rewrite> and"),
        ("<risk>none</risk><rewrite>Hi</rewrite>\n<unchanged/>", "both a <rewrite> and"),
        ("<risk>none</risk><rewrite>Hi <unchanged/></rewrite>", "contract's own tags"),
        ("<risk>none</risk></unchanged>", "no <rewrite> section"),
        ("<risk>none</risk><unchanged-ish/>", "no <rewrite> section"),
    ],
)
def test_malformed_markers_fail_loudly(raw: str, message: str) -> None:
    with pytest.raises(RewriteParseError, match=message) as info:
        parse_output(raw)
    assert info.value.raw == raw


def test_a_copy_of_the_text_is_still_a_valid_answer() -> None:
    parsed = parse_output(format_output("t", Risk.NONE, "What flower is this?"))
    assert (parsed.rewrite, parsed.unchanged) == ("What flower is this?", False)


def test_format_output_refuses_the_marker_under_medium_or_high_risk() -> None:
    for risk in (Risk.MEDIUM, Risk.HIGH):
        with pytest.raises(ValueError, match="cannot be left unchanged"):
            format_output("t", risk, None)


@pytest.mark.parametrize("tag", ["<unchanged/>", "< unchanged / >", "</Unchanged>", "<think/>"])
def test_marker_and_self_closing_contract_tags_inside_a_rewrite_are_rejected(tag: str) -> None:
    with pytest.raises(RewriteParseError):
        parse_output(f"<risk>low</risk><rewrite>Say {tag} now</rewrite>")
