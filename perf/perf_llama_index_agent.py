"""LlamaIndex agent overhead: ``FunctionAgent`` on an LLM with and without ``VLMGuardLLM``.

Both agents run the same scripted model (LlamaIndex's ``MockFunctionCallingLLM`` with a
response generator: tool calls, then an answer) and the same tools; the guarded one
wraps that model in ``VLMGuardLLM`` with a ``ScriptedBackend`` rewriter answering with
zero delay.  The difference is the wrapper's own work (converting the conversation,
the conversation-state digest, the core's coverage check, the request, writing the
rewrite back, the rewrite event) plus the rewriter calls themselves, images decoded (a
512 px PNG from a tool).  Every guarded run starts with an empty verdict cache, as a
new conversation does.

Reported per scenario: rewriter calls per agent run (counted from the backend) with the
verdict cache and without it (``verdict_cache_size=0``), time per run of each agent, and
the overhead per model call, split into the core's rewrites (their ``latency_ms``) and
the rest (the wrapper).  Rounds are interleaved (plain, guarded, plain, ...) so load on
the machine hits both sides alike; figures are medians over rounds.  The last section
times one tool-calling model call alone (``achat_with_tools``), without the workflow
engine around it.

Run: .venv/bin/python perf/perf_llama_index_agent.py
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_index.core

# Nothing here downloads: the agent's memory counts tokens with the tokenizer LlamaIndex ships.
os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR", str(Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache")
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core.agent.workflow import FunctionAgent  # noqa: E402
from llama_index.core.base.llms.types import (  # noqa: E402
    ChatMessage,
    ImageBlock,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.instrumentation import get_dispatcher  # noqa: E402
from llama_index.core.instrumentation.event_handlers import BaseEventHandler  # noqa: E402
from llama_index.core.instrumentation.events import BaseEvent  # noqa: E402
from llama_index.core.llms.mock import MockFunctionCallingLLM  # noqa: E402
from llama_index.core.tools import BaseTool, FunctionTool  # noqa: E402
from llama_index_vlmguard import VLMGuardLLM, VLMGuardRewriteEvent  # noqa: E402
from PIL import Image  # noqa: E402

from vlmguard_plugins import Rewriter  # noqa: E402
from vlmguard_plugins.testing import ScriptedBackend  # noqa: E402

ROUNDS = 7
RUNS = 15
CALL_ROUNDS = 300
QUESTION = "Find the photo of the product and tell me how to use it."
ANSWER = "Here is how to use it safely: read the manual first."


def _photo_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 40).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _tools() -> list[BaseTool]:
    photo = _photo_png()

    def fetch_photo(product: str = "x") -> ImageBlock:
        """Fetch the product's photo."""
        return ImageBlock(image=photo)

    def lookup(product: str = "x") -> str:
        """Look the product up in the catalogue."""
        return "A 12-piece set, stainless steel, with a carrying case."

    def log_visit(product: str = "x") -> str:
        """Record that the product was looked at (returns nothing)."""
        return ""

    return [FunctionTool.from_defaults(fn) for fn in (fetch_photo, lookup, log_visit)]


@dataclass(frozen=True)
class Scenario:
    label: str
    steps: tuple[tuple[str, ...], ...]
    """The tools the model calls at each step (several: in parallel); then it answers."""

    @property
    def model_calls(self) -> int:
        return len(self.steps) + 1

    def respond(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        """The model's move, from the conversation alone (so every run replays the script)."""
        last_user = max(i for i, m in enumerate(messages) if m.role == MessageRole.USER)
        step = sum(m.role == MessageRole.ASSISTANT for m in messages[last_user:])
        if step >= len(self.steps):
            return ChatMessage(role=MessageRole.ASSISTANT, content=ANSWER)
        return ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[
                ToolCallBlock(
                    tool_call_id=f"call_{step}_{i}", tool_name=name, tool_kwargs={"product": "x"}
                )
                for i, name in enumerate(self.steps[step])
            ],
        )


SCENARIOS = [
    Scenario("answer only (1 model call)", ()),
    Scenario("text tool (2 model calls)", (("lookup",),)),
    Scenario("image tool (2 model calls)", (("fetch_photo",),)),
    Scenario("text, image, text (4 model calls)", (("lookup",), ("fetch_photo",), ("lookup",))),
    Scenario("image + text at once (2 model calls)", (("fetch_photo", "lookup"),)),
    # Steps that bring nothing new to judge: the cost of the wrapper's bookkeeping.
    Scenario(
        "image, 2 empty tools (4 model calls)",
        (("fetch_photo",), ("log_visit",), ("log_visit",)),
    ),
]


class RewriteTimes(BaseEventHandler):
    """Adds up the core's own time in the rewrites (their ``latency_ms``), cache hits aside."""

    total_ms: float = 0.0

    @classmethod
    def class_name(cls) -> str:
        return "RewriteTimes"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, VLMGuardRewriteEvent) and not event.result.cached:
            self.total_ms += event.result.latency_ms


async def _per_run_ms(run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(RUNS):
        await run()
    return (time.perf_counter() - started) / RUNS * 1e3


async def _measure(scenario: Scenario, tools: list[BaseTool], streaming: bool) -> None:
    backend = ScriptedBackend()  # well-formed "no risk, unchanged" answers, at once
    plain_model = MockFunctionCallingLLM(is_chat_model=True, response_generator=scenario.respond)
    guarded_model = MockFunctionCallingLLM(is_chat_model=True, response_generator=scenario.respond)
    guarded_llm = VLMGuardLLM(llm=guarded_model, rewriter=Rewriter(backend))
    plain = FunctionAgent(tools=[*tools], llm=plain_model, streaming=streaming)
    guarded = FunctionAgent(tools=[*tools], llm=guarded_llm, streaming=streaming)
    verdicts = guarded_llm.verdicts
    assert verdicts is not None

    async def run_guarded() -> None:
        verdicts.clear()  # a new conversation
        await guarded.run(user_msg=QUESTION)

    await plain.run(user_msg=QUESTION)  # warm-up
    await run_guarded()
    backend.calls.clear()
    plain_times: list[float] = []
    guarded_times: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so load on the machine hits both sides alike
        plain_times.append(await _per_run_ms(lambda: plain.run(user_msg=QUESTION)))
        guarded_times.append(await _per_run_ms(run_guarded))
    calls = len(backend.calls) / (ROUNDS * RUNS)

    uncached_backend = ScriptedBackend()
    uncached = FunctionAgent(
        tools=[*tools],
        llm=VLMGuardLLM(
            llm=MockFunctionCallingLLM(is_chat_model=True, response_generator=scenario.respond),
            rewriter=Rewriter(uncached_backend),
            verdict_cache_size=0,
        ),
        streaming=streaming,
    )
    await uncached.run(user_msg=QUESTION)
    uncached_calls = len(uncached_backend.calls)

    # The core's own time in one run's rewrites: the rest of the difference is the wrapper.
    times = RewriteTimes()
    root = get_dispatcher()
    root.add_event_handler(times)
    try:
        core_runs: list[float] = []
        for _ in range(RUNS):
            times.total_ms = 0.0
            await run_guarded()
            core_runs.append(times.total_ms)
    finally:
        root.event_handlers.remove(times)
    core_ms = statistics.median(core_runs)

    plain_ms, guarded_ms = statistics.median(plain_times), statistics.median(guarded_times)
    per_call_us = (guarded_ms - plain_ms) / scenario.model_calls * 1e3
    own_us = (guarded_ms - plain_ms - core_ms) / scenario.model_calls * 1e3
    print(
        f"  {scenario.label:<38} rewriter calls {calls:3.1f} (no cache: {uncached_calls})  "
        f"plain {plain_ms:6.2f} ms  guarded {guarded_ms:6.2f} ms  "
        f"ratio {guarded_ms / plain_ms:4.2f}x  per model call: +{per_call_us:5.0f} us, "
        f"of which core rewrites {core_ms / scenario.model_calls * 1e3:5.0f} us, "
        f"wrapper {own_us:5.0f} us"
    )


async def _one_call(tools: list[BaseTool], label: str, result: list[ChatMessage]) -> None:
    """One tool-calling model call, the workflow engine aside: the wrapper's cost alone.

    The conversation is the user's message, a tool call and its ``result``, a second
    tool call and its empty result: the state the wrapper judged after the first tool,
    so with the verdict cache the call costs no rewriter call.
    """
    scenario = SCENARIOS[-1]
    history = [ChatMessage(role=MessageRole.USER, content=QUESTION)]
    history.append(scenario.respond(history))
    history.extend(result)
    judged = len(history)
    history.append(scenario.respond(history))
    history.append(ChatMessage(role=MessageRole.TOOL, content="", additional_kwargs={"id": "b"}))

    def model() -> MockFunctionCallingLLM:
        return MockFunctionCallingLLM(is_chat_model=True, response_generator=scenario.respond)

    plain = model()
    cached = VLMGuardLLM(llm=model(), rewriter=Rewriter(ScriptedBackend()))
    uncached = VLMGuardLLM(llm=model(), rewriter=Rewriter(ScriptedBackend()), verdict_cache_size=0)
    # The state is known to the cached wrapper: the model's answers came through it.
    assert cached.verdicts is not None
    for message in history:
        if message.role == MessageRole.ASSISTANT:
            cached.verdicts.remember_answer(message)
    await cached.achat_with_tools(tools, chat_history=history[:judged])

    async def timed(llm: Any) -> float:
        started = time.perf_counter()
        await llm.achat_with_tools(tools, chat_history=history)
        return (time.perf_counter() - started) * 1e3

    for llm in (plain, cached, uncached):  # warm-up
        await timed(llm)
    samples: dict[str, list[float]] = {"plain": [], "cached": [], "uncached": []}
    for _ in range(CALL_ROUNDS):
        for name, llm in (("plain", plain), ("cached", cached), ("uncached", uncached)):
            samples[name].append(await timed(llm))
    plain_ms, cached_ms, uncached_ms = (statistics.median(samples[k]) for k in samples)
    print(f"  {label}: the model alone {plain_ms:6.3f} ms")
    for row, ms in (
        ("guarded, state known (no rewriter call)", cached_ms),
        ("guarded, verdict cache off (a rewrite)", uncached_ms),
    ):
        print(
            f"    {row:<42} {ms:6.3f} ms  ratio {ms / plain_ms:5.2f}x  "
            f"(+{(ms - plain_ms) * 1e3:5.0f} us)"
        )


async def main() -> None:
    tools = _tools()
    print(
        "FunctionAgent with vs without VLMGuardLLM, ScriptedBackend (zero delay), "
        f"median of {ROUNDS} interleaved rounds x {RUNS} runs"
    )
    for streaming in (True, False):
        print(f" streaming={streaming} ({'astream_chat' if streaming else 'achat'}_with_tools):")
        for scenario in SCENARIOS:
            await _measure(scenario, tools, streaming)
    print(
        " one achat_with_tools call (user, tool call, result, tool call, empty result), "
        f"median of {CALL_ROUNDS} interleaved calls:"
    )
    text = ChatMessage(role=MessageRole.TOOL, content="A 12-piece set, stainless steel.")
    png = _photo_png()
    photo = ChatMessage(role=MessageRole.TOOL, blocks=[ImageBlock(image=png)])
    await _one_call(tools, "text result", [text])
    await _one_call(tools, f"512 px photo result ({len(png) // 1024} KB PNG)", [photo])


if __name__ == "__main__":
    asyncio.run(main())
