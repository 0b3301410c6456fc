"""The output contract's parser on well-formed and realistic malformed model outputs."""

from __future__ import annotations

import pytest

from vlmguard_plugins import Risk
from vlmguard_plugins.errors import RewriteParseError
from vlmguard_plugins.parsing import format_output, parse_output

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
    assert parsed.rewrite.endswith("safely.")


def test_fenced_block() -> None:
    parsed = parse_output("```xml\n" + WELL_FORMED + "\n```")
    assert parsed.rewrite.endswith("safely.")


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
