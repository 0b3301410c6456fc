"""LangChain agent overhead: ``create_agent`` with and without ``VLMGuardMiddleware``.

Both agents run the same scripted model (replies with tool calls, then an answer) and
the same tools; the guarded one has a ``ScriptedBackend`` rewriter answering with zero
delay.  What the difference measures is the middleware's own work (converting the
conversation, fingerprinting what is new, the core's coverage check, building the
rewritten request, the verdict in the state, the graph's extra ``before_model`` node)
plus the rewriter calls themselves, images decoded (a 512 px PNG from a tool).

Reported per scenario: rewriter calls per agent run (counted from the backend), time
per run of each agent, and the overhead per model call, split into the core's rewrites
(their ``latency_ms``: images decoded, prompt built, output parsed) and the rest (the
middleware, the sync path's hop to the rewriter's loop, the graph's extra node).  Rounds
are interleaved (plain, guarded, plain, ...) so load on the machine hits both sides
alike; figures are medians over rounds.

Run: .venv/bin/python perf/perf_langchain_agent.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import BaseTool, tool
from langchain_vlmguard import VLMGuardMiddleware
from langchain_vlmguard.testing import ToolCallingFakeChatModel
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.testing import ScriptedBackend

ROUNDS = 7
RUNS = 40
QUESTION = "Find the photo of the product and tell me how to use it."
ANSWER = "Here is how to use it safely: read the manual first."


def _png_block() -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 40).convert("RGB").save(buffer, format="PNG")
    return {
        "type": "image",
        "base64": base64.b64encode(buffer.getvalue()).decode("ascii"),
        "mime_type": "image/png",
    }


def _tools() -> list[BaseTool]:
    photo = _png_block()

    @tool
    def fetch_photo(product: str) -> list[dict[str, Any]]:
        """Fetch the product's photo."""
        return [photo]

    @tool
    def lookup(product: str) -> str:
        """Look the product up in the catalogue."""
        return "A 12-piece set, stainless steel, with a carrying case."

    return [fetch_photo, lookup]


def _call(name: str, index: int) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": {"product": "x"}, "id": f"call_{index}"}]
    )


@dataclass(frozen=True)
class Scenario:
    label: str
    tools_called: tuple[str, ...]
    judge_tool_text: bool = True

    def replies(self) -> list[AIMessage | str]:
        return [*(_call(name, i) for i, name in enumerate(self.tools_called)), ANSWER]


SCENARIOS = [
    Scenario("answer only (1 model call)", ()),
    Scenario("text tool (2 model calls)", ("lookup",)),
    Scenario("image tool (2 model calls)", ("fetch_photo",)),
    Scenario("text, image, text (4 model calls)", ("lookup", "fetch_photo", "lookup")),
    # Steps that bring nothing new to judge: the cost of the middleware's bookkeeping.
    Scenario("3 text tools, judge_tool_text=False", ("lookup",) * 3, judge_tool_text=False),
]


class PassThrough(AgentMiddleware):
    """A middleware with the guard's hooks that does nothing: LangChain's cost for them."""

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return None

    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return None

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(request)

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return await handler(request)


def _agent(scenario: Scenario, tools: list[BaseTool], middleware: list[Any]) -> Any:
    model = ToolCallingFakeChatModel(messages=itertools.cycle(scenario.replies()))
    return create_agent(model, tools, middleware=middleware)


def _per_run_ms(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(RUNS):
        run()
    return (time.perf_counter() - started) / RUNS * 1e3


async def _aper_run_ms(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(RUNS):
        await run()
    return (time.perf_counter() - started) / RUNS * 1e3


def _report(
    scenario: Scenario, calls: float, plain: list[float], guarded: list[float], core_ms: float
) -> None:
    plain_ms, guarded_ms = statistics.median(plain), statistics.median(guarded)
    model_calls = len(scenario.tools_called) + 1
    per_call_us = (guarded_ms - plain_ms) / model_calls * 1e3
    own_us = (guarded_ms - plain_ms - core_ms) / model_calls * 1e3
    print(
        f"  {scenario.label:<37} rewriter calls {calls:3.1f}  plain {plain_ms:6.2f} ms  "
        f"guarded {guarded_ms:6.2f} ms  ratio {guarded_ms / plain_ms:4.2f}x  "
        f"per model call: +{per_call_us:5.0f} us, of which core rewrites "
        f"{core_ms / model_calls * 1e3:5.0f} us, middleware {own_us:5.0f} us"
    )


def _rounds(plain: Any, guarded: Any, state: dict[str, Any]) -> tuple[list[float], list[float]]:
    plain_times: list[float] = []
    guarded_times: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so load on the machine hits both sides alike
        plain_times.append(_per_run_ms(lambda: plain.invoke(state)))
        guarded_times.append(_per_run_ms(lambda: guarded.invoke(state)))
    return plain_times, guarded_times


async def _arounds(
    plain: Any, guarded: Any, state: dict[str, Any]
) -> tuple[list[float], list[float]]:
    plain_times: list[float] = []
    guarded_times: list[float] = []
    for _ in range(ROUNDS):
        plain_times.append(await _aper_run_ms(lambda: plain.ainvoke(state)))
        guarded_times.append(await _aper_run_ms(lambda: guarded.ainvoke(state)))
    return plain_times, guarded_times


def _measure(scenario: Scenario, tools: list[BaseTool], mode: str) -> None:
    backend = ScriptedBackend.rewriting_to("Describe safe use of this product.")
    guard = VLMGuardMiddleware(Rewriter(backend), judge_tool_text=scenario.judge_tool_text)
    plain = _agent(scenario, tools, [])
    guarded = _agent(scenario, tools, [guard])
    state = {"messages": [HumanMessage(QUESTION)]}
    if mode == "invoke":
        plain.invoke(state), guarded.invoke(state)  # warm-up
        backend.calls.clear()
        plain_times, guarded_times = _rounds(plain, guarded, state)
    else:

        async def measure() -> tuple[list[float], list[float]]:
            await plain.ainvoke(state), await guarded.ainvoke(state)
            backend.calls.clear()
            return await _arounds(plain, guarded, state)

        plain_times, guarded_times = asyncio.run(measure())
    calls = len(backend.calls) / (ROUNDS * RUNS)
    # The core's own time in the rewrites of one run (images decoded, prompt, parsing), as
    # each verdict reports it: the rest of the difference is the middleware and the graph.
    core_ms = statistics.median(
        sum(
            v["result"]["latency_ms"]
            for v in guarded.invoke(state)["vlmguard"]["verdicts"].values()
        )
        for _ in range(RUNS)
    )
    _report(scenario, calls, plain_times, guarded_times, core_ms)
    guard.rewriter.close()


def _scale(tools: list[BaseTool]) -> None:
    """For scale: what LangChain costs for a middleware with the same hooks doing nothing."""
    scenario = SCENARIOS[-1]
    plain = _agent(scenario, tools, [])
    hooked = _agent(scenario, tools, [PassThrough()])
    state = {"messages": [HumanMessage(QUESTION)]}
    plain.invoke(state), hooked.invoke(state)
    plain_times, hooked_times = _rounds(plain, hooked, state)
    per_call_us = (
        (statistics.median(hooked_times) - statistics.median(plain_times))
        / (len(scenario.tools_called) + 1)
        * 1e3
    )
    print(
        f" for scale: a pass-through middleware with the same hooks (before_model, "
        f"wrap_model_call) adds {per_call_us:.0f} us per model call (invoke, {scenario.label})"
    )


def main() -> None:
    tools = _tools()
    print(
        f"create_agent with vs without VLMGuardMiddleware, ScriptedBackend (zero delay), "
        f"median of {ROUNDS} interleaved rounds x {RUNS} runs"
    )
    for mode in ("invoke", "ainvoke"):
        print(f" {mode}:")
        for scenario in SCENARIOS:
            _measure(scenario, tools, mode)
    _scale(tools)


if __name__ == "__main__":
    main()
