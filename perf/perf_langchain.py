"""LangChain adapter overhead: ``VLMGuardRewriter`` against calling the core ``Rewriter`` directly.

Both sides use the same ``ScriptedBackend`` (no model), so the difference is what the
adapter adds per call: converting the LangChain input to the core's conversation, the
core's coverage check and request building (``Rewriter.guard``), the Runnable machinery
(callback manager, run tree, custom event) and converting the output back.

Run: .venv/bin/python perf/perf_langchain.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
import time
from collections.abc import Awaitable, Callable

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda
from langchain_vlmguard import VLMGuardRewriter, from_conversation, to_conversation
from PIL import Image

from vlmguard_plugins import Rewriter, RewriteRequest
from vlmguard_plugins.conversation import plan, write_back
from vlmguard_plugins.testing import ScriptedBackend

CALLS = 300
ROUNDS = 5
QUESTION = "What is the quickest way to use this on someone?"


def _image_data_url() -> str:
    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 40).convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _per_call_us(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        call()
    return (time.perf_counter() - started) / CALLS * 1e6


async def _aper_call_us(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        await call()
    return (time.perf_counter() - started) / CALLS * 1e6


def _report(label: str, core: list[float], adapter: list[float]) -> None:
    core_us, adapter_us = statistics.median(core), statistics.median(adapter)
    print(
        f"  {label:<28} core {core_us:8.0f} us   adapter {adapter_us:8.0f} us   "
        f"overhead {adapter_us - core_us:+7.0f} us   ratio {adapter_us / core_us:5.2f}x"
    )


def main() -> None:
    rewriter = Rewriter(backend=ScriptedBackend.rewriting_to("Describe safe knife handling."))
    guard = VLMGuardRewriter(rewriter=rewriter)
    data_url = _image_data_url()
    message = HumanMessage(
        content=[
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": data_url}},
        ]
    )

    def core_str() -> object:
        return rewriter.rewrite(QUESTION)

    def adapter_str() -> object:
        return guard.invoke(QUESTION)

    def core_image() -> object:
        request = RewriteRequest(text=QUESTION, images=[data_url], allow_local_files=False)
        return rewriter.rewrite(request)

    def adapter_image() -> object:
        return guard.invoke([message])

    async def acore_str() -> object:
        return await rewriter.arewrite(QUESTION)

    async def aadapter_str() -> object:
        return await guard.ainvoke(QUESTION)

    async def acore_image() -> object:
        request = RewriteRequest(text=QUESTION, images=[data_url], allow_local_files=False)
        return await rewriter.arewrite(request)

    async def aadapter_image() -> object:
        return await guard.ainvoke([message])

    print(f"LangChain adapter vs core, ScriptedBackend, median of {ROUNDS} rounds x {CALLS} calls")
    sync_pairs = {
        "invoke(str)": (core_str, adapter_str),
        "invoke([msg + 512px PNG])": (core_image, adapter_image),
    }
    for label, (core, adapter) in sync_pairs.items():
        core(), adapter()  # warm-up
        core_times, adapter_times = [], []
        for _ in range(ROUNDS):  # interleaved, so load on the machine hits both sides alike
            core_times.append(_per_call_us(core))
            adapter_times.append(_per_call_us(adapter))
        _report(label, core_times, adapter_times)

    async def run_async() -> None:
        async_pairs = {
            "ainvoke(str)": (acore_str, aadapter_str),
            "ainvoke([msg + 512px PNG])": (acore_image, aadapter_image),
        }
        for label, (core, adapter) in async_pairs.items():
            await core(), await adapter()
            core_times, adapter_times = [], []
            for _ in range(ROUNDS):
                core_times.append(await _aper_call_us(core))
                adapter_times.append(await _aper_call_us(adapter))
            _report(label, core_times, adapter_times)

    asyncio.run(run_async())

    # The adapter's own work, without the Runnable machinery: convert in and out; and
    # the core's coverage check and request building, which the adapter calls.
    result = rewriter.rewrite(QUESTION)
    messages = [message]
    conversation = to_conversation(messages)
    guard_plan = plan(conversation, allow_local_files=False)
    written = write_back(guard_plan.conversation, 0, result.prompt)
    convert_in = statistics.median(
        _per_call_us(lambda: to_conversation(messages)) for _ in range(ROUNDS)
    )
    core_plan = statistics.median(
        _per_call_us(lambda: plan(conversation, allow_local_files=False)) for _ in range(ROUNDS)
    )
    convert_out = statistics.median(
        _per_call_us(lambda: from_conversation(written, result=result, target=0))
        for _ in range(ROUNDS)
    )
    print(
        f"  translation only, [msg + 512px PNG]: convert in {convert_in:5.1f} us, "
        f"core plan {core_plan:5.1f} us, convert out {convert_out:5.1f} us"
    )

    # For scale: what LangChain itself costs for one invoke of a Runnable doing nothing.
    identity = RunnableLambda(lambda value: value)
    identity.invoke(QUESTION)
    empty = statistics.median(
        _per_call_us(lambda: identity.invoke(QUESTION)) for _ in range(ROUNDS)
    )
    print(f"  for scale: RunnableLambda(identity).invoke costs {empty:.0f} us per call")
    rewriter.close()


if __name__ == "__main__":
    main()
