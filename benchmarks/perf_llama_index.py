"""LlamaIndex adapter benchmark: what the transform and the LLM wrapper add to a direct core call.

Every case runs the same rewrite on a zero-latency ScriptedBackend (so the figures are
the adapter's own cost, the worst case for the ratio) and prints the median time per
call of the direct core call, of the adapter, and their ratio.

Run: .venv/bin/python benchmarks/perf_llama_index.py
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import QueryBundle
from llama_index_vlmguard import VLMGuardLLM, VLMGuardQueryTransform, aguard_messages
from PIL import Image

from vlmguard_plugins import Rewriter, RewriteRequest
from vlmguard_plugins.examples_assets import EXAMPLE_PROMPTS, draw_example_images
from vlmguard_plugins.testing import ScriptedBackend

ROUNDS = 300
TEXT = EXAMPLE_PROMPTS["knife"]
HISTORY = [
    ChatMessage(role="system", content="You are a helpful assistant."),
    ChatMessage(role="user", content="Hi, I am cooking tonight."),
    ChatMessage(role="assistant", content="Great, what are you making?"),
]
TURNS = [
    {"role": "user", "text": HISTORY[1].content},
    {"role": "assistant", "text": HISTORY[2].content},
]


def _compare(direct: Callable[[], object], adapter: Callable[[], object]) -> tuple[float, float]:
    """Median ms per call of each; the two alternate, so load on the machine hits both alike."""
    for _ in range(20):  # warm-up
        direct()
        adapter()
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for call, bucket in ((direct, timings[0]), (adapter, timings[1])):
            started = time.perf_counter()
            call()
            bucket.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings[0]), statistics.median(timings[1])


async def _acompare(
    direct: Callable[[], Awaitable[object]], adapter: Callable[[], Awaitable[object]]
) -> tuple[float, float]:
    for _ in range(20):
        await direct()
        await adapter()
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for call, bucket in ((direct, timings[0]), (adapter, timings[1])):
            started = time.perf_counter()
            await call()
            bucket.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings[0]), statistics.median(timings[1])


def _report(label: str, timings: tuple[float, float]) -> None:
    direct_ms, adapter_ms = timings
    print(
        f"  {label:44s} direct {direct_ms:6.3f} ms  adapter {adapter_ms:6.3f} ms  "
        f"ratio {adapter_ms / direct_ms:4.2f}x  (+{(adapter_ms - direct_ms) * 1000:5.0f} us)"
    )


def _png_bytes(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def query_transform(rewriter: Rewriter, image: Path) -> None:
    transform = VLMGuardQueryTransform(rewriter)
    print("query transform (sync run, as TransformQueryEngine calls it)")
    _report("text only", _compare(lambda: rewriter.rewrite(TEXT), lambda: transform.run(TEXT)))
    _report(
        "text + image_path (320x240 PNG)",
        _compare(
            lambda: rewriter.rewrite(TEXT, images=[image]),
            lambda: transform.run(QueryBundle(TEXT, image_path=str(image))),
        ),
    )


def llm_wrapper(rewriter: Rewriter, image: Path) -> None:
    vlm = MockLLM(is_chat_model=True)
    guarded = VLMGuardLLM(llm=vlm, rewriter=rewriter)
    data = _png_bytes(image)
    print("LLM wrapper (direct = core rewrite + the wrapped LLM's chat)")
    for label, block, source in [
        ("ImageBlock(path=...)", ImageBlock(path=image), image),
        ("ImageBlock(image=bytes)", ImageBlock(image=data), data),
    ]:
        messages = [*HISTORY, ChatMessage(role="user", blocks=[block, TextBlock(text=TEXT)])]

        def direct(source: object = source, messages: list[ChatMessage] = messages) -> None:
            rewriter.rewrite(TEXT, images=[source], history=TURNS)
            vlm.chat(messages)

        _report(
            f"chat, {label} + 2 turns",
            _compare(direct, lambda messages=messages: guarded.chat(messages)),
        )


async def async_paths(rewriter: Rewriter, image: Path) -> None:
    messages = [
        *HISTORY,
        ChatMessage(role="user", blocks=[ImageBlock(path=image), TextBlock(text=TEXT)]),
    ]
    request = RewriteRequest(text=TEXT, images=[image], history=TURNS)
    transform = VLMGuardQueryTransform(rewriter)
    print("asynchronous paths")
    _report(
        "aguard_messages, path image + 2 turns",
        await _acompare(
            lambda: rewriter.arewrite(request), lambda: aguard_messages(messages, rewriter)
        ),
    )
    _report(
        "transform.arun, image_path",
        await _acompare(
            lambda: rewriter.arewrite(TEXT, images=[image]),
            lambda: transform.arun(QueryBundle(TEXT, image_path=str(image))),
        ),
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        image = draw_example_images(folder)["knife"]
        rewriter = Rewriter(backend=ScriptedBackend.rewriting_to("Describe safe knife handling."))
        print(f"zero-latency backend, median of {ROUNDS} interleaved calls each\n")
        query_transform(rewriter, image)
        llm_wrapper(rewriter, image)
        asyncio.run(async_paths(rewriter, image))
        rewriter.close()


if __name__ == "__main__":
    main()
