"""Synthesis throughput: concurrent vs sequential samples, and the pipeline's own overhead.

The teacher and target stand in for remote servers with a fixed latency per call
(``--latency-ms``), so the ratio shows what concurrency buys against a real
OpenAI-compatible server; ``--latency-ms 0`` measures our own per-sample cost
(image loading, prompts, parsing, journalling).

    .venv/bin/python perf/perf_train.py [--samples 40] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vlmguard_plugins.testing.training import (
    scripted_target,
    scripted_teacher,
    write_example_source,
)
from vlmguard_plugins.train import SynthConfig, synthesize


def run(source: Path, output: Path, concurrency: int, latency_s: float) -> tuple[float, int]:
    """Seconds for one synthesis run, and the model calls it made."""
    config = SynthConfig(
        input=source, output=output, concurrency=concurrency, max_benign_fraction=None
    )
    teacher, target = scripted_teacher(delay_s=latency_s), scripted_target(delay_s=latency_s)
    started = time.perf_counter()
    summary = synthesize(config, teacher=teacher, target=target)
    elapsed = time.perf_counter() - started
    assert summary.accepted == summary.total, summary.as_dict()
    return elapsed, len(teacher.calls) + len(target.calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = write_example_source(root / "src", args.samples, benign=0)
        latency = args.latency_ms / 1000
        sequential, calls = run(source, root / "seq", 1, latency)
        concurrent, _ = run(source, root / "conc", args.concurrency, latency)
        overhead, _ = run(source, root / "overhead", args.concurrency, 0.0)

    print(f"samples: {args.samples}, simulated server latency: {args.latency_ms:.0f} ms per call")
    print(
        f"sequential (concurrency 1):       {sequential:6.2f} s  "
        f"({args.samples / sequential:6.1f} samples/s)"
    )
    print(
        f"concurrent (concurrency {args.concurrency:>2}):      {concurrent:6.2f} s  "
        f"({args.samples / concurrent:6.1f} samples/s)"
    )
    print(f"speed-up: {sequential / concurrent:.1f}x")
    print(
        f"pipeline overhead, no latency:    {overhead / args.samples * 1000:6.1f} ms per sample "
        f"({calls / args.samples:.1f} model calls each)"
    )


if __name__ == "__main__":
    main()
