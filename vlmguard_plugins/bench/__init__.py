"""The safety benchmark harness, built on inspect_ai.

Tasks read the published benchmark files (SIUO, MM-SafetyBench, VLGuard, FigStep,
MM-Vet); defences are solvers (``none``, ``static_shield``, ``adashield_s``, ``ecso``,
``vlmguard``);
judges are scorers.  Every run writes inspect logs that ``inspect view`` shows, and
:func:`build_report` turns a log folder into tables and plots::

    from vlmguard_plugins.bench import run_benchmark, build_report

    run_benchmark(tasks=["figstep"], targets=["openai-api/vllm/Qwen2-VL-7B-Instruct"],
                  defenses=["none", "vlmguard"], judge="paper",
                  judge_model="openai-api/vllm/Qwen2.5-72B-Instruct",
                  data_dir="benchmarks", log_dir="logs/figstep")
    build_report("logs/figstep", "reports/figstep")

This package imports inspect_ai lazily, so ``vlmguard --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BenchmarkDataError": "errors",
    "MissingImagesError": "errors",
    "DEFENSES": "defenses",
    "defense_solver": "defenses",
    "JUDGES": "scorers",
    "TASKS": "tasks",
    "build_task": "tasks",
    "run_benchmark": "run",
    "build_report": "report",
    "run_paper": "paper",
    "render_typo_images": "typo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
