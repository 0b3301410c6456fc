"""The VLMGuard-R1 paper's comparison against served models, in one call.

:func:`run_paper` runs SIUO, MM-SafetyBench and VLGuard (safety) and MM-Vet (utility)
with every defence on every target through :func:`~vlmguard_plugins.bench.run_benchmark`,
then writes the tables and plots with :func:`~vlmguard_plugins.bench.build_report`
(including the safety-versus-utility trade-off plots).  ``vlmguard bench paper`` is
its command line.

Targets and judges served by an OpenAI-compatible server (vLLM, SGLang, Ollama...)
are reached with the ``vlmguard-openai/<service>/<model>`` provider
(:mod:`vlmguard_plugins.bench.openai_provider`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog
from inspect_ai.model import Model

from ..rewriter import Rewriter
from .defenses import DEFENSES
from .report import build_report
from .run import run_benchmark

__all__ = [
    "PAPER_DEFENSES",
    "PAPER_TASKS",
    "PaperRun",
    "run_paper",
]


PAPER_TASKS: tuple[str, ...] = ("siuo", "mm_safetybench", "vlguard", "mmvet")
"""The paper's safety benchmarks and its utility benchmark (VLGuard: its three subsets)."""

PAPER_DEFENSES: tuple[str, ...] = DEFENSES
"""No defence, every baseline the harness has, and the rewriter."""


@dataclass
class PaperRun:
    """What :func:`run_paper` did: whether every task finished, the logs and the report."""

    success: bool
    logs: list[EvalLog]
    log_dir: Path
    report_dir: Path
    written: list[Path]


def run_paper(
    targets: Sequence[str | Model],
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    judge_model: str | Model,
    judge: str = "paper",
    tasks: Sequence[str] = PAPER_TASKS,
    defenses: Sequence[str] = PAPER_DEFENSES,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    **run_options: Any,
) -> PaperRun:
    """Run the comparison and write its report; returns a :class:`PaperRun`.

    The inspect logs go to ``<out_dir>/logs`` (running the same call again resumes an
    interrupted run) and the tables and plots to ``<out_dir>/report``; the report is
    written even when some task did not finish, from the samples that did.
    ``run_options`` go to :func:`~vlmguard_plugins.bench.run_benchmark` (``limit``,
    ``missing_images``, ``image_dirs``, ``max_connections``, ``target_args``...).
    """
    out = Path(out_dir)
    log_dir, report_dir = out / "logs", out / "report"
    success, logs = run_benchmark(
        list(tasks),
        list(targets),
        list(defenses),
        data_dir=data_dir,
        log_dir=log_dir,
        judge=judge,
        judge_model=judge_model,
        rewriter=rewriter,
        rewriter_backend=rewriter_backend,
        rewriter_args=rewriter_args,
        **run_options,
    )
    written = build_report(log_dir, report_dir)
    return PaperRun(success, logs, log_dir, report_dir, written)
