"""Gateway benchmark: concurrent streaming clients through the gateway vs the upstream directly.

A fake upstream VLM (streaming ``--chunks`` pieces, one every ``--chunk-interval-ms``),
the gateway in front of it with a scripted (instant) rewriter, each in its own process,
and the load generated from ``--client-procs`` further processes.  Every request carries
a text and a small PNG, as a VLM request does.  Each phase runs for a bounded time.

Prints, per phase: requests, errors, incomplete streams, p50/p99 time to the first
content chunk and to the end of the stream; then the latency the gateway adds (gateway
minus direct), the gateway's CPU time per request and its memory before and after.

Run: .venv/bin/python perf/perf_gateway.py            (200 clients, 30 s per phase)
     .venv/bin/python perf/perf_gateway.py --clients 20 --duration 5   (a quick look)
     add --memory-rounds 3 to load the gateway again and watch its memory
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
from PIL import Image

REWRITE = "Describe what is in this picture and how to handle it safely."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pieces(count: int) -> list[str]:
    return [f"token-{i} " for i in range(count)]


def _serve_upstream(port: int, chunks: int, interval_s: float) -> None:
    import uvicorn

    from vlmguard_plugins.testing import ChatCompletionServer

    upstream = ChatCompletionServer(
        chunks=_pieces(chunks), chunk_delay_s=interval_s, model="fake-vlm", record=False
    )
    uvicorn.run(upstream.app, host="127.0.0.1", port=port, log_level="error", backlog=4096)


class InstantRewriterBackend:
    """A scripted rewriter model that answers at once and, unlike ScriptedBackend, keeps no
    record of its calls (a load run would otherwise hold every request in memory)."""

    name = "instant"

    def __init__(self) -> None:
        from vlmguard_plugins import Risk
        from vlmguard_plugins.parsing import format_output

        self.answer = format_output("textual: scripted\nvisual: scripted", Risk.MEDIUM, REWRITE)

    async def agenerate(self, request: Any) -> Any:
        from vlmguard_plugins import Generation

        return Generation(text=self.answer)

    async def aclose(self) -> None:
        pass


def _serve_gateway(port: int, upstream_url: str, upstream_clients: int = 8) -> None:
    import uvicorn

    from vlmguard_plugins import Rewriter
    from vlmguard_plugins.server import GatewaySettings, create_app

    settings = GatewaySettings(
        upstream_url=upstream_url, port=port, upstream_clients=upstream_clients
    )
    rewriter = Rewriter(InstantRewriterBackend(), max_concurrency=settings.rewriter_max_concurrency)
    uvicorn.run(
        create_app(settings, rewriter),
        host="127.0.0.1",
        port=port,
        log_level="error",
        backlog=4096,
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )


def _png_data_url(width: int = 64, height: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _chat_body(text: str, image_url: str) -> dict[str, Any]:
    """A streamed chat request for ``fake-vlm``: one user turn of ``text`` and an image."""
    return {
        "model": "fake-vlm",
        "stream": True,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            }
        ],
    }


def _request_body() -> dict[str, Any]:
    return _chat_body("How do I use this?", _png_data_url())


@dataclass
class PhaseResult:
    requests: int = 0
    errors: int = 0
    incomplete: int = 0
    first_chunk_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)

    def merge(self, other: PhaseResult) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.incomplete += other.incomplete
        self.first_chunk_s += other.first_chunk_s
        self.total_s += other.total_s


async def _one_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], expected: list[str]
) -> tuple[str, float, float]:
    """('ok' | 'error' | 'incomplete', seconds to first content chunk, seconds in all)."""
    started = time.perf_counter()
    first = 0.0
    pieces: list[str] = []
    done = False
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return "error", 0.0, 0.0
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    break
                for choice in event.get("choices", []):
                    if content := choice["delta"].get("content"):
                        if not pieces:
                            first = time.perf_counter() - started
                        pieces.append(content)
    except (httpx.HTTPError, ValueError):
        return "error", 0.0, 0.0
    if not done or pieces != expected:
        return "incomplete", 0.0, 0.0
    return "ok", first, time.perf_counter() - started


async def _client_loops(url: str, clients: int, duration_s: float, chunks: int) -> PhaseResult:
    result = PhaseResult()
    body = _request_body()
    expected = _pieces(chunks)
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def loop() -> None:
            while time.perf_counter() < deadline:
                outcome, first, total = await _one_stream(client, url, body, expected)
                result.requests += 1
                if outcome == "error":
                    result.errors += 1
                elif outcome == "incomplete":
                    result.incomplete += 1
                else:
                    result.first_chunk_s.append(first)
                    result.total_s.append(total)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return result


def _client_process(args: tuple[str, int, float, int]) -> PhaseResult:
    return asyncio.run(_client_loops(*args))


def _run_phase(url: str, clients: int, duration_s: float, chunks: int, procs: int) -> PhaseResult:
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_client_process, [(url, n, duration_s, chunks) for n in shares])
    merged = PhaseResult()
    for part in parts:
        merged.merge(part)
    return merged


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def _print_phase(label: str, result: PhaseResult, duration_s: float) -> None:
    print(
        f"  {label:26s} {result.requests:6d} requests ({result.requests / duration_s:6.1f}/s), "
        f"errors {result.errors}, incomplete streams {result.incomplete}"
    )
    for name, values in (("first chunk", result.first_chunk_s), ("whole stream", result.total_s)):
        print(
            f"  {'':26s} {name:12s} p50 {_ms(_percentile(values, 50))}  "
            f"p99 {_ms(_percentile(values, 99))}"
        )


def _print_added(direct: PhaseResult, gateway: PhaseResult) -> None:
    for name, attribute in (("first chunk", "first_chunk_s"), ("whole stream", "total_s")):
        d, g = getattr(direct, attribute), getattr(gateway, attribute)
        print(
            f"  added by the gateway, {name:12s}: p50 "
            f"{_ms(_percentile(g, 50) - _percentile(d, 50))}  p99 "
            f"{_ms(_percentile(g, 99) - _percentile(d, 99))}"
        )


def _wait_healthy(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _rewrite_seconds_mean(gateway_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway_url}/metrics").text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    count = values.get("vlmguard_gateway_rewrite_seconds_count", 0.0)
    return values.get("vlmguard_gateway_rewrite_seconds_sum", 0.0) / count if count else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent streaming clients")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--chunks", type=int, default=20, help="content pieces per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=50.0)
    parser.add_argument("--client-procs", type=int, default=4, help="processes making the load")
    parser.add_argument(
        "--upstream-clients", type=int, default=8, help="connection pools to the upstream"
    )
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=0,
        help="then run the gateway phase this many more times, printing its memory after each",
    )
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    upstream_port, gateway_port = _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    servers = [
        context.Process(
            target=_serve_upstream,
            args=(upstream_port, args.chunks, args.chunk_interval_ms / 1000),
            daemon=True,
        ),
        context.Process(
            target=_serve_gateway,
            args=(gateway_port, upstream_url, args.upstream_clients),
            daemon=True,
        ),
    ]
    for server in servers:
        server.start()
    try:
        _wait_healthy(f"{upstream_url}/models")
        _wait_healthy(f"{gateway_url}/healthz")
        gateway_process = psutil.Process(servers[1].pid)
        stream_s = args.chunks * args.chunk_interval_ms / 1000
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(
            f"gateway benchmark: {args.clients} concurrent streaming clients, "
            f"{args.duration:.0f} s per phase, streams of {args.chunks} chunks every "
            f"{args.chunk_interval_ms:.0f} ms (~{stream_s:.1f} s), scripted rewriter; "
            f"{psutil.cpu_count()} CPUs, load average before the run {load}"
        )
        # Warm both paths (connections, imports, first-call costs).
        _run_phase(f"{upstream_url}/chat/completions", 4, 2, args.chunks, 1)
        _run_phase(f"{gateway_url}/v1/chat/completions", 4, 2, args.chunks, 1)
        rss_before = gateway_process.memory_info().rss
        cpu_before = sum(gateway_process.cpu_times()[:2])

        direct = _run_phase(
            f"{upstream_url}/chat/completions",
            args.clients,
            args.duration,
            args.chunks,
            args.client_procs,
        )
        guarded = _run_phase(
            f"{gateway_url}/v1/chat/completions",
            args.clients,
            args.duration,
            args.chunks,
            args.client_procs,
        )
        cpu_used = sum(gateway_process.cpu_times()[:2]) - cpu_before
        rss_after = gateway_process.memory_info().rss

        _print_phase("upstream directly", direct, args.duration)
        _print_phase("through the gateway", guarded, args.duration)
        _print_added(direct, guarded)
        print(
            f"  gateway CPU per request: {cpu_used / max(guarded.requests, 1) * 1000:.2f} ms; "
            f"mean rewrite step (scripted rewriter, image decode included): "
            f"{_rewrite_seconds_mean(gateway_url) * 1000:.2f} ms"
        )
        print(
            f"  gateway memory (RSS): {rss_before / 2**20:.1f} MiB before, "
            f"{rss_after / 2**20:.1f} MiB after "
            f"({(rss_after - rss_before) / 2**20:+.1f} MiB)"
        )
        for round_number in range(1, args.memory_rounds + 1):
            extra = _run_phase(
                f"{gateway_url}/v1/chat/completions",
                args.clients,
                args.duration,
                args.chunks,
                args.client_procs,
            )
            print(
                f"  memory round {round_number}: {extra.requests} more requests "
                f"(errors {extra.errors}, incomplete {extra.incomplete}), gateway RSS "
                f"{gateway_process.memory_info().rss / 2**20:.1f} MiB"
            )
    finally:
        for server in servers:
            server.terminate()
            server.join(timeout=30)


if __name__ == "__main__":
    main()
