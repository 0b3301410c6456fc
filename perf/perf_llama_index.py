"""LlamaIndex adapter benchmark: what the transform and the LLM wrapper add to a direct core call.

Every case runs the same rewrite on a zero-latency ScriptedBackend (so the figures are
the adapter's own cost, the worst case for the ratio) and prints the median time per
call of the direct core call, of the adapter, and their ratio.  The first sections
compare with ``Rewriter.rewrite`` (the figures of docs/performance.md); "adapter alone"
compares with ``Rewriter.guard`` on the same conversation built by hand, which is the
core call the adapter makes, so the difference is the conversion; "RAG" times a whole
query engine over a small index with and without the guarded LLM.

Run: .venv/bin/python perf/perf_llama_index.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import QueryBundle, TextNode
from llama_index_vlmguard import (
    VLMGuardLLM,
    VLMGuardQueryTransform,
    aguard_messages,
    guard_messages,
    to_conversation,
)
from PIL import Image

from vlmguard_plugins import HistoryTurn, Rewriter, RewriteRequest
from vlmguard_plugins.conversation import from_openai
from vlmguard_plugins.examples_assets import EXAMPLE_PROMPTS, draw_example_images
from vlmguard_plugins.testing import ScriptedBackend

ROUNDS = 300
TEXT = EXAMPLE_PROMPTS["knife"]
SYSTEM = "You are a helpful assistant."
EARLIER = ("Hi, I am cooking tonight.", "Great, what are you making?")
HISTORY = [
    ChatMessage(role="system", content=SYSTEM),
    ChatMessage(role="user", content=EARLIER[0]),
    ChatMessage(role="assistant", content=EARLIER[1]),
]
TURNS = [HistoryTurn(role="user", text=EARLIER[0]), HistoryTurn(role="assistant", text=EARLIER[1])]


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
    # No verdict cache: every call pays a full guard, the cost being measured.
    guarded = VLMGuardLLM(llm=vlm, rewriter=rewriter, verdict_cache_size=0)
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

        def adapter(messages: list[ChatMessage] = messages) -> None:
            guarded.chat(messages)

        _report(f"chat, {label} + 2 turns", _compare(direct, adapter))


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


def adapter_alone(rewriter: Rewriter, image: Path) -> None:
    data = _png_bytes(image)
    messages = [
        *HISTORY,
        ChatMessage(role="user", blocks=[ImageBlock(image=data), TextBlock(text=TEXT)]),
    ]
    conversation = to_conversation(messages)  # the same conversation, converted once
    openai_messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": EARLIER[0]},
        {"role": "assistant", "content": EARLIER[1]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(data)}},
                {"type": "text", "text": TEXT},
            ],
        },
    ]
    print("adapter alone (direct = Rewriter.guard on the conversation, as the adapter calls it)")
    _report(
        "guard_messages, bytes image + 2 turns",
        _compare(lambda: rewriter.guard(conversation), lambda: guard_messages(messages, rewriter)),
    )
    _report(
        "  (for scale: the OpenAI-format converter)",
        _compare(
            lambda: rewriter.guard(conversation),
            lambda: rewriter.guard(from_openai(openai_messages)),
        ),
    )


def rag(rewriter: Rewriter) -> None:
    """A query engine over a small index: the guarded LLM against the plain one."""
    documents = [f"Document {i}: kitchen knives belong in a knife block." for i in range(4)]
    index = VectorStoreIndex(
        [TextNode(text=text) for text in documents], embed_model=MockEmbedding(embed_dim=8)
    )
    vlm = MockLLM(is_chat_model=True)
    plain = index.as_query_engine(llm=vlm, similarity_top_k=2)
    guarded = index.as_query_engine(
        llm=VLMGuardLLM(llm=vlm, rewriter=rewriter, verdict_cache_size=0), similarity_top_k=2
    )
    print("RAG (direct = the engine with the plain LLM plus the core rewrite of the question)")

    def direct() -> None:
        rewriter.rewrite(TEXT)
        plain.query(TEXT)

    _report(
        "query engine, question rewritten in place", _compare(direct, lambda: guarded.query(TEXT))
    )


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        image = draw_example_images(folder)["knife"]
        rewriter = Rewriter(backend=ScriptedBackend.rewriting_to("Describe safe knife handling."))
        print(f"zero-latency backend, median of {ROUNDS} interleaved calls each\n")
        query_transform(rewriter, image)
        llm_wrapper(rewriter, image)
        asyncio.run(async_paths(rewriter, image))
        adapter_alone(rewriter, image)
        rag(rewriter)
        rewriter.close()


if __name__ == "__main__":
    main()
