"""Untrusted text cannot stall the guard: tag neutralising and output parsing are linear.

Both read text an attacker controls (the user's request, and a model output the user
can steer). Each adversarial family below is run at size n and 8n: linear work grows
about 8 times, quadratic work (a backtracking regex) about 64 times. Two measures:

* Python-level work, counted exactly as trace events (deterministic, no clock);
* wall-clock time, best of a few runs, allowed 32 times for 8 times the input (half
  of quadratic growth), retried so that a busy machine cannot fail it. The absolute
  bound on the largest inputs is only a sanity check, far above the real cost.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from vlmguard_plugins.errors import RewriteParseError
from vlmguard_plugins.parsing import parse_output
from vlmguard_plugins.prompts import neutralise_tags


def _parse(text: str) -> object:
    try:
        return parse_output(text)
    except RewriteParseError as exc:  # adversarial outputs may well be malformed
        return exc


def _trace_events(fn: Callable[[str], object], text: str) -> int:
    """How many Python lines and calls run for ``fn(text)``: an exact count of work."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        nonlocal count
        count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(text)
    finally:
        sys.settrace(None)
    return count


def _best_time(fn: Callable[[str], object], text: str, runs: int = 5) -> float:
    best = total = 0.0
    for run in range(runs):
        start = time.perf_counter()
        fn(text)
        elapsed = time.perf_counter() - start
        best = elapsed if run == 0 else min(best, elapsed)
        total += elapsed
        if total > 1.0:  # already slow: more runs would only delay the failure
            break
    return best


def assert_linear(fn: Callable[[str], object], make: Callable[[int], str], n: int) -> None:
    small, large = make(n), make(8 * n)
    assert len(large) >= 7 * len(small)

    events_small, events_large = _trace_events(fn, small), _trace_events(fn, large)
    assert events_large <= 9 * events_small + 100, (events_small, events_large)

    ratios = []
    for _ in range(3):
        ratio = _best_time(fn, large) / max(_best_time(fn, small), 1e-6)
        ratios.append(ratio)
        if ratio < 32 or ratio > 100:  # retry only what a busy machine could explain
            break
    if ratios[-1] >= 32:
        pytest.fail(f"8x the input took {ratios[-1]:.0f}x the time: not linear ({ratios})")


def assert_fast(fn: Callable[[str], object], text: str, limit_s: float = 0.5) -> None:
    start = time.perf_counter()
    fn(text)
    elapsed = time.perf_counter() - start
    assert elapsed < limit_s, f"{len(text)} chars took {elapsed:.2f} s"


# Each family at size n; the user's text is capped at 16,000 characters upstream.
NEUTRALISE_FAMILIES: dict[str, Callable[[int], str]] = {
    "lt then spaces": lambda n: "<" + " " * n,
    "lt then mixed whitespace": lambda n: "<" + " \t\n\r\f\v\u00a0\u2028" * (n // 8),
    "lt slash spaces": lambda n: "< /" + " " * n,
    "lt slash repeated": lambda n: "< / " * (n // 4),
    "lt slash slash": lambda n: "</" * (n // 2),
    "many lt": lambda n: "<" * n,
    "name then spaces, no gt": lambda n: "<think" + " " * n,
    "name then attributes, no gt": lambda n: '<rewrite a="' + "x" * n,
    "many names, no gt": lambda n: "<think" * (n // 6),
    "many closing names, no gt": lambda n: "</ REWRITE " * (n // 11),
    "spaces then name at the end": lambda n: "<" + " " * n + "risk",
    "spaced names, no gt": lambda n: ("<" + " " * 40 + "user_request") * (n // 53),
    "many complete tags": lambda n: "<think>" * (n // 7),
    "tags split by spaces": lambda n: ("</ conversation x=1 >" + " " * 30) * (n // 50),
    "near misses": lambda n: "<thinker <risky <rewrites <user_requests " * (n // 40),
}

PARSE_FAMILIES: dict[str, Callable[[int], str]] = {
    "spaces inside rewrite": lambda n: "<rewrite>" + " " * n + "x</rewrite>",
    "spaces inside an unclosed rewrite": lambda n: "<rewrite>x" + " " * n + "y",
    "spaces and newlines around a fence": lambda n: (
        "```" + " \n" * n + "<rewrite>x" + "\n " * n + "y\n```"
    ),
    "spaces then a fence inside rewrite": lambda n: "<rewrite>x" + " " * n + "``` y",
    "many backticks": lambda n: "<rewrite>x" + "`" * n + "y",
    "many unclosed think": lambda n: "<think>" * (n // 7) + "<rewrite>x</rewrite>",
    "many unclosed risk": lambda n: "<risk> " * (n // 7) + "<rewrite>x</rewrite>",
    "risk then spaces": lambda n: "<risk>" + " " * n + "!<rewrite>x</rewrite><risk>" + " " * n,
    "nested rewrite": lambda n: "<rewrite>" * (n // 9),
    "nested tags in rewrite": lambda n: "<rewrite>x" + "<think><risk>" * (n // 13),
    "open brackets in rewrite": lambda n: "<rewrite>x" + "< / " * (n // 4),
    "spaced names in rewrite, no gt": lambda n: "<rewrite>x</" + " " * n + "think" + " " * n,
    "many lt": lambda n: "<" * n + "<rewrite>x" + "<" * n,
    "unclosed prose": lambda n: "<think>" + "a" * n + "<rewrite>" + "b " * n,
}


@pytest.mark.parametrize("family", sorted(NEUTRALISE_FAMILIES))
def test_neutralise_tags_is_linear(family: str) -> None:
    make = NEUTRALISE_FAMILIES[family]
    assert_linear(neutralise_tags, make, 2_000)
    assert_fast(neutralise_tags, make(16_000))


@pytest.mark.parametrize("family", sorted(PARSE_FAMILIES))
def test_parse_output_is_linear(family: str) -> None:
    make = PARSE_FAMILIES[family]
    assert_linear(_parse, make, 6_250)
    assert_fast(_parse, make(50_000))


def test_neutralising_a_full_length_attack_is_fast() -> None:
    # The reported input: "<" and 16,000 spaces took over 10 s with a regex.
    text = "<" + " " * 15_999
    assert_fast(neutralise_tags, text)
    assert neutralise_tags(text) == text


def test_fifty_thousand_spaces_inside_rewrite_parse_fast() -> None:
    raw = "<think>ok</think><risk>low</risk><rewrite>" + " " * 50_000 + "Describe it.</rewrite>"
    assert_fast(parse_output, raw)
    assert parse_output(raw).rewrite == "Describe it."


def test_one_megabyte_output_parses_fast() -> None:
    prose = "A long but harmless request about a photo of a kitchen. " * 18_000
    raw = "<think>\n" + prose + "\n</think>\n<risk>none</risk>\n<rewrite>\n" + prose + "</rewrite>"
    assert len(raw) > 2_000_000
    assert_fast(parse_output, raw, limit_s=1.0)
    parsed = parse_output(raw)
    assert parsed.rewrite == prose.strip() and parsed.analysis == prose.strip()

    spaces = "<rewrite>x" + " " * 1_000_000 + "y"
    assert_fast(parse_output, spaces)
    assert parse_output(spaces).rewrite.split() == ["x", "y"]


def test_one_megabyte_of_tag_fragments_is_fast() -> None:
    fragments = "<think><risk>< / rewrite <REWRITE </ risk " * 25_000
    assert len(fragments) > 1_000_000
    assert_fast(_parse, fragments, limit_s=1.0)
    assert_fast(neutralise_tags, fragments, limit_s=1.0)
    assert "<" not in neutralise_tags(fragments + ">")
