"""What the OpenTelemetry spans cost per rewrite.

A scripted backend that answers at once (zero model latency) makes the guard's own work
all there is to measure, the worst case for any overhead.  Within a round the
configurations take turns call by call (the order rotating), so that drift in the
machine's load falls on all of them; a round's figure is the median of its calls, its
ratio (and added time) the median of the paired calls' ratios to (differences from)
"off", and what is printed are the medians over the rounds.

- off: ``Telemetry(enabled=False)``, the same path as without ``opentelemetry-api``;
- API, no SDK: the API installed, no tracer provider configured (non-recording spans);
- SDK: a recording ``TracerProvider`` with a ``BatchSpanProcessor`` whose exporter
  discards the spans (the export itself is the collector's cost, not the guard's);
- SDK + content: the same, with message content captured.

Run: .venv/bin/python perf/perf_telemetry.py [--rounds 9] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.telemetry import Telemetry
from vlmguard_plugins.testing import ScriptedBackend


class DiscardingExporter(SpanExporter):
    """An exporter that drops every span: the SDK's work is measured, not a network."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def _png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, format="PNG")
    return buffer.getvalue()


async def measure(rounds: int, calls: int) -> None:
    exporter = DiscardingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    configurations = {
        "off": Telemetry(enabled=False),
        "API, no SDK": Telemetry(),
        "SDK": Telemetry(tracer_provider=provider, capture_message_content=False),
        "SDK + content": Telemetry(tracer_provider=provider, capture_message_content=True),
    }
    rewriters = {
        name: Rewriter(ScriptedBackend(), telemetry=telemetry)
        for name, telemetry in configurations.items()
    }
    workloads = {"text only": [], "one 64x64 PNG": [_png()]}

    for workload, images in workloads.items():
        for rewriter in rewriters.values():  # warm-up: first calls build caches
            for _ in range(50):
                await rewriter.arewrite("What is shown here?", images=images)

        async def once(rewriter: Rewriter, index: int, images: list[bytes] = images) -> float:
            started = time.perf_counter()
            await rewriter.arewrite(f"What is shown here? ({index})", images=images)
            return (time.perf_counter() - started) * 1e6

        names = list(rewriters)
        per_call: dict[str, list[float]] = {name: [] for name in names}
        ratios: dict[str, list[float]] = {name: [] for name in names}
        extra: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(rounds):
            timings: dict[str, list[float]] = {name: [] for name in names}
            for index in range(calls):
                # Call by call, each configuration in turn (the order rotating), so that
                # a change in the machine's load falls on every configuration alike.
                shift = (round_ + index) % len(names)
                for name in names[shift:] + names[:shift]:
                    timings[name].append(await once(rewriters[name], index))
            for name in names:
                per_call[name].append(statistics.median(timings[name]))
                pairs = list(zip(timings[name], timings["off"], strict=True))
                ratios[name].append(statistics.median(t / o for t, o in pairs))
                extra[name].append(statistics.median(t - o for t, o in pairs))
        print(
            f"\n{workload}: {rounds} rounds of {calls} interleaved rewrites per configuration, "
            "scripted zero-latency backend (medians)"
        )
        for name in names:
            median = statistics.median(per_call[name])
            ratio = statistics.median(ratios[name])
            print(
                f"  {name:14s}: {median:7.1f} us/rewrite  ratio {ratio:5.3f} "
                f"(rounds {min(ratios[name]):.3f} to {max(ratios[name]):.3f})  "
                f"+{statistics.median(extra[name]):5.1f} us a rewrite"
            )
    provider.shutdown()
    print(f"\nspans exported (and discarded): {exporter.exported}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(measure(args.rounds, args.calls))


if __name__ == "__main__":
    main()
