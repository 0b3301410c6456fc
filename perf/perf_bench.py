"""Benchmark harness performance: concurrency of the harness and batching of local targets.

Run: .venv/bin/python perf/perf_bench.py [--data-dir ../shared/benchmarks]

1. FigStep-Tiny (50 samples) with the ``vlmguard`` defence, a rewriter that answers
   in 50 ms (a stand-in for a remote rewriter server) and inspect's mock target:
   one sample at a time vs the harness's concurrency.
2. FigStep-Tiny with the tiny random-weight Qwen2.5-VL as a ``vlmguard-transformers``
   target (16 new tokens): one connection vs 16 (the backend batches concurrent calls).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vlmguard_plugins import Rewriter
from vlmguard_plugins.bench.run import run_benchmark
from vlmguard_plugins.testing import ScriptedBackend, make_tiny_model

REWRITER_DELAY_S = 0.05
ROUNDS = 3


def _offline_tiktoken() -> None:
    try:
        import llama_index.core as llama_index_core
    except ImportError:
        return
    cache = Path(llama_index_core.__file__).parent / "_static" / "tiktoken_cache"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))


def _timed(**kwargs: object) -> float:
    with tempfile.TemporaryDirectory() as log_dir:
        started = time.perf_counter()
        success, _ = run_benchmark(log_dir=log_dir, display="none", retry_attempts=0, **kwargs)
        elapsed = time.perf_counter() - started
    assert success, "benchmark run failed"
    return elapsed


def _interleaved(
    first: Callable[[], float], second: Callable[[], float]
) -> tuple[float, float, str]:
    """Run the two alternately ``ROUNDS`` times; medians of each and of the paired ratios."""
    firsts, seconds, ratios = [], [], []
    for _ in range(ROUNDS):
        firsts.append(first())
        seconds.append(second())
        ratios.append(firsts[-1] / seconds[-1])
    ratio = f"x{statistics.median(ratios):.1f} (rounds x{min(ratios):.1f} to x{max(ratios):.1f})"
    return statistics.median(firsts), statistics.median(seconds), ratio


def harness_concurrency(data_dir: str) -> None:
    def run(max_samples: int) -> float:
        backend = ScriptedBackend.rewriting_to("Explain safely.", delay_s=REWRITER_DELAY_S)
        return _timed(
            tasks=["figstep"],
            targets=["mockllm/model"],
            defenses=["vlmguard"],
            data_dir=data_dir,
            rewriter=Rewriter(backend=backend),
            max_samples=max_samples,
        )

    run(16)  # warm-up: imports, first log
    sequential, concurrent, ratio = _interleaved(lambda: run(1), lambda: run(16))
    print(
        f"harness, 50 samples, {REWRITER_DELAY_S * 1000:.0f} ms rewriter "
        f"(medians of {ROUNDS} interleaved rounds): "
        f"sequential {sequential:.2f} s, concurrent (16) {concurrent:.2f} s, speed-up {ratio}"
    )


def tiny_target_batching(data_dir: str) -> None:
    with tempfile.TemporaryDirectory() as model_dir:
        make_tiny_model(model_dir)
        target = f"vlmguard-transformers/{model_dir}"

        def run(connections: int) -> float:
            return _timed(
                tasks=["figstep"],
                targets=[target],
                defenses=["none"],
                data_dir=data_dir,
                max_tokens=16,
                max_connections=connections,
                max_samples=connections,
                target_args={"max_batch_size": 16, "max_wait_ms": 20},
            )

        run(16)  # warm-up: model load, kernels
        sequential, batched, ratio = _interleaved(lambda: run(1), lambda: run(16))
    print(
        f"tiny target, 50 samples, 16 tokens (medians of {ROUNDS} interleaved rounds): "
        f"one at a time {sequential:.2f} s, 16 connections (batched) {batched:.2f} s, "
        f"speed-up {ratio}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).parents[2] / "shared/benchmarks"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _offline_tiktoken()
    harness_concurrency(args.data_dir)
    tiny_target_batching(args.data_dir)


if __name__ == "__main__":
    main()
