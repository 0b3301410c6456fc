"""Remote backend benchmark: concurrent vs one-at-a-time rewrites, and the client's overhead.

The server (vlmguard_plugins.testing.ChatCompletionServer) runs in a child process, so the CPU time
measured here is the client's alone.

Run: .venv/bin/python perf/perf_remote.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from typing import Any

from PIL import Image

from vlmguard_plugins import Rewriter, load_image
from vlmguard_plugins.backends.openai import OpenAIBackend
from vlmguard_plugins.prompts import build_messages

MODEL = "vlmguard-r1"
N_REWRITES = 64
LATENCY_S = 0.100
OVERHEAD_ROUNDS = 200
ROUNDS = 5


def _serve(delay_s: float, ready: Any, stop: Any) -> None:
    from vlmguard_plugins.testing import ChatCompletionServer

    with ChatCompletionServer(model=MODEL, delay_s=delay_s) as server:
        ready.put(server.base_url)
        stop.wait()


class ServerProcess:
    """A ChatCompletionServer answering after ``delay_s``, in its own process."""

    def __init__(self, delay_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve, args=(delay_s, self._ready, self._stop), daemon=True
        )

    def __enter__(self) -> str:
        self._process.start()
        return self._ready.get(timeout=60)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._process.join(timeout=10)


async def concurrent_vs_sequential(base_url: str) -> None:
    backend = OpenAIBackend(MODEL, base_url=base_url, max_concurrency=N_REWRITES)
    rewriter = Rewriter(backend=backend, max_concurrency=N_REWRITES, on_error="raise")
    texts = [f"What is shown here? ({i})" for i in range(N_REWRITES)]
    await rewriter.arewrite_batch(texts[:8])  # open connections
    print(f"{N_REWRITES} rewrites against a server that answers after {LATENCY_S * 1000:.0f} ms")
    print(f"(medians of {ROUNDS} interleaved rounds: one at a time, then all at once)")
    for label, images in (("text only", []), ("one 640x480 image each", [_photo()])):
        sequential_runs, concurrent_runs, ratios = [], [], []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            for text in texts:
                await rewriter.arewrite(text, images=images)
            sequential_runs.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.gather(*(rewriter.arewrite(text, images=images) for text in texts))
            concurrent_runs.append(time.perf_counter() - started)
            ratios.append(sequential_runs[-1] / concurrent_runs[-1])
        sequential = statistics.median(sequential_runs)
        concurrent = statistics.median(concurrent_runs)
        print(f"  {label}")
        print(
            f"    one at a time : {sequential:6.2f} s ({N_REWRITES / sequential:6.1f} rewrites/s)"
        )
        print(
            f"    concurrent    : {concurrent:6.2f} s ({N_REWRITES / concurrent:6.1f} rewrites/s)"
        )
        print(
            f"    speed-up      : {statistics.median(ratios):6.1f}x "
            f"(rounds {min(ratios):.1f}x to {max(ratios):.1f}x; ideal {N_REWRITES}x)"
        )
    await rewriter.aclose()


def _photo() -> Image.Image:
    return Image.new("RGB", (640, 480), "orange")


async def _timed(call: Any, rounds: int) -> tuple[float, float]:
    """Median wall ms per call and client CPU ms per call."""
    walls = []
    cpu_started = time.process_time()
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        walls.append((time.perf_counter() - started) * 1000)
    cpu = (time.process_time() - cpu_started) * 1000 / rounds
    return statistics.median(walls), cpu


async def client_overhead(base_url: str) -> None:
    """The same chat sent by the bare SDK, and by Rewriter + OpenAIBackend."""
    from openai import AsyncOpenAI

    photo = _photo()
    prepared = load_image(photo)
    data_url = prepared.data_url(1024)
    backend = OpenAIBackend(MODEL, base_url=base_url)
    rewriter = Rewriter(backend=backend, on_error="raise")
    sdk = AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0)
    system, user = build_messages("What is shown here?", [prepared])
    sdk_messages = [
        {"role": "system", "content": system["content"][0]["text"]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url}}
                if part["type"] == "image"
                else {"type": "text", "text": part["text"]}
                for part in user["content"]
            ],
        },
    ]

    async def bare_sdk() -> None:
        await sdk.chat.completions.create(
            model=MODEL, messages=sdk_messages, max_tokens=512, temperature=0.0, stop=["</rewrite>"]
        )

    async def prepared_image() -> None:
        await rewriter.arewrite("What is shown here?", images=[prepared])

    async def pil_image() -> None:
        await rewriter.arewrite("What is shown here?", images=[photo])

    rows = [
        ("bare openai SDK", bare_sdk),
        ("Rewriter, PreparedImage", prepared_image),
        ("Rewriter, PIL image", pil_image),
    ]
    for _, call in rows:  # warm up connections and caches
        await _timed(call, 10)
    measured = [(label, *await _timed(call, OVERHEAD_ROUNDS)) for label, call in rows]
    await sdk.close()
    await rewriter.aclose()

    print(f"\nclient overhead: {OVERHEAD_ROUNDS} sequential requests, server answering at once,")
    print("one 640x480 image (a PreparedImage is encoded once; a PIL image on every call)")
    _, sdk_wall, sdk_cpu = measured[0]
    for label, wall, cpu in measured:
        print(
            f"  {label:<24}: {wall:6.2f} ms wall, {cpu:6.2f} ms client CPU"
            f"  ({wall - sdk_wall:+6.2f} / {cpu - sdk_cpu:+6.2f} ms vs bare SDK)"
        )


def main() -> None:
    with ServerProcess(LATENCY_S) as base_url:
        asyncio.run(concurrent_vs_sequential(base_url))
    with ServerProcess(0.0) as base_url:
        asyncio.run(client_overhead(base_url))


if __name__ == "__main__":
    main()
