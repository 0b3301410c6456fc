"""Gateway rollout modes: time to the first answer chunk, enforce vs speculative vs shadow.

A fake upstream VLM that takes ``--upstream-ms`` before its first streamed chunk, a
scripted rewriter that takes ``--rewriter-ms`` per rewrite, and three gateways in front
of the upstream (modes ``enforce``, ``speculative``, ``shadow``).  Each round sends one
streamed request with a text and a small PNG to every target (the upstream directly
and each gateway), in an order that rotates from round to round, and measures the time
until the first chunk with answer text.  Prints the median over rounds per target and
its ratio to the direct call.

Two workloads: ``benign`` (the rewriter leaves the request unchanged: a speculative hit)
and ``risky`` (the rewriter rewrites it: a speculative miss, the upstream called twice).
Shadow mode forwards the original at once in both.  Every gateway writes an audit log.

Run: .venv/bin/python perf/perf_gateway_modes.py                 (40 rounds)
     .venv/bin/python perf/perf_gateway_modes.py --rounds 10     (a quick look)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from perf_gateway import _chat_body, _png_data_url

from vlmguard_plugins import Rewriter, Risk
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.server import GatewaySettings, create_app
from vlmguard_plugins.server.config import GatewayMode
from vlmguard_plugins.testing import ChatCompletionServer, ScriptedBackend, run_in_thread

MODES: tuple[GatewayMode, ...] = ("enforce", "speculative", "shadow")
REWRITE = "Describe what is in this picture and how to handle it safely."


def _first_chunk_s(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    """Seconds from sending ``body`` until the first event with answer text arrives."""
    started = time.perf_counter()
    first: float | None = None
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is not None or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if any(choice.get("delta", {}).get("content") for choice in choices):
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url}: no answer text in the stream")
    return first


def _rewriter(workload: str, latency_s: float) -> Rewriter:
    if workload == "benign":
        backend = ScriptedBackend(delay_s=latency_s)  # risk none, text unchanged
    else:
        answer = format_output("textual: scripted", Risk.MEDIUM, REWRITE)
        backend = ScriptedBackend([answer], delay_s=latency_s)
    return Rewriter(backend)


def run(workload: str, rounds: int, rewriter_s: float, upstream_s: float) -> dict[str, float]:
    """Median time to the first chunk per target, for one workload."""
    image_url = _png_data_url(64, 48)
    body = _chat_body("What is in this picture?", image_url)
    with ExitStack() as stack:
        upstream = stack.enter_context(
            ChatCompletionServer(
                chunks=[f"token-{i} " for i in range(8)],
                model="fake-vlm",
                delay_s=upstream_s,
                record=False,
            )
        )
        targets = {"direct": upstream.base_url}
        audit_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for mode in MODES:
            # Each gateway writes its audit log, as a rollout would.
            settings = GatewaySettings(
                upstream_url=upstream.base_url, mode=mode, audit_log=str(audit_dir / mode)
            )
            app = create_app(settings, _rewriter(workload, rewriter_s))
            targets[mode] = stack.enter_context(run_in_thread(app)) + "/v1"
        client = stack.enter_context(httpx.Client(timeout=30))
        names = list(targets)
        for name in names:  # warm the connections and the code paths
            _first_chunk_s(client, targets[name], body)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for number in range(rounds):
            # Interleaved, and rotated so no target always follows the same one.
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(_first_chunk_s(client, targets[name], body))
        return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--rewriter-ms", type=float, default=100.0)
    parser.add_argument("--upstream-ms", type=float, default=150.0)
    args = parser.parse_args()
    print(
        f"time to first chunk, median of {args.rounds} interleaved rounds "
        f"(rewriter {args.rewriter_ms:g} ms, upstream first chunk {args.upstream_ms:g} ms)"
    )
    for workload in ("benign", "risky"):
        medians = run(workload, args.rounds, args.rewriter_ms / 1000, args.upstream_ms / 1000)
        direct = medians["direct"]
        print(f"\n{workload}:")
        for name, value in medians.items():
            print(f"  {name:<12} {value * 1000:7.1f} ms   x{value / direct:.2f} of direct")


if __name__ == "__main__":
    main()
