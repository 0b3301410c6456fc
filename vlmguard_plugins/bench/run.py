"""Run benchmarks: every task x defence x target as one resumable inspect eval set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inspect_ai import Task, eval_set
from inspect_ai.log import EvalLog
from inspect_ai.model import Model

from ..errors import ConfigurationError
from ..rewriter import Rewriter
from . import provider as _provider  # noqa: F401  (registers the vlmguard-transformers provider)
from .defenses import DEFENSES
from .errors import JudgeError
from .tasks import build_task, parse_spec

__all__ = ["build_tasks", "check_kind", "run_benchmark"]


def check_kind(tasks: Sequence[str], kind: str) -> None:
    """Refuse an MM-SafetyBench image ``kind`` when no MM-SafetyBench task would use it.

    ``kind`` applies to the ``mm_safetybench`` tasks only; left to apply to nothing, a
    run would look like an SD-only (or TYPO-only) measurement and be none.

    Raises:
        ConfigurationError: ``kind`` is not ``all`` and no task is MM-SafetyBench.
    """
    if kind == "all":
        return
    if not any(parse_spec(spec)[0] == "mm_safetybench" for spec in tasks):
        raise ConfigurationError(
            f"--kind {kind} picks MM-SafetyBench's image kind and applies to the "
            f"mm_safetybench task only, which is not among the tasks ({', '.join(tasks)}); "
            "add --task mm_safetybench or leave --kind out"
        )


def build_tasks(
    tasks: Sequence[str],
    defenses: Sequence[str],
    *,
    data_dir: str | Path,
    judge: str = "offline",
    judge_model: str | Model | None = None,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    image_dirs: dict[str, str] | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    kind: str = "all",
) -> list[Task]:
    """One inspect task per task spec (``figstep``, ``vlguard:unsafes``...) and defence.

    ``temperature``, ``top_p`` and ``seed`` set the target's sampling in every task
    (``temperature=None`` leaves SIUO at its published 1.0 and the others at the
    target's default); ``kind`` picks MM-SafetyBench's image kind and is applied to
    the ``mm_safetybench`` tasks only (:func:`check_kind`).
    """
    if not tasks or not defenses:
        raise ConfigurationError("give at least one task and one defence")
    check_kind(tasks, kind)
    built: list[Task] = []
    for spec in tasks:
        name = spec.partition(":")[0].replace("-", "_")
        image_dir = (image_dirs or {}).get(name)
        options: dict[str, Any] = {"top_p": top_p, "seed": seed}
        if temperature is not None or name != "siuo":
            options["temperature"] = temperature
        if name == "mm_safetybench":
            options["kind"] = kind
        for defense in defenses:
            built.extend(
                build_task(
                    spec,
                    data_dir=str(data_dir),
                    defense=defense,
                    judge=judge,
                    judge_model=judge_model,
                    image_dir=image_dir,
                    missing_images=missing_images,
                    max_tokens=max_tokens,
                    rewriter=rewriter if defense == "vlmguard" else None,
                    rewriter_backend=rewriter_backend,
                    rewriter_args=rewriter_args if defense == "vlmguard" else None,
                    **options,
                )
            )
    return built


def run_benchmark(
    tasks: Sequence[str],
    targets: Sequence[str | Model],
    defenses: Sequence[str] = ("none", "vlmguard"),
    *,
    data_dir: str | Path,
    log_dir: str | Path,
    judge: str = "offline",
    judge_model: str | Model | None = None,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    image_dirs: dict[str, str] | None = None,
    limit: int | None = None,
    target_args: dict[str, Any] | None = None,
    max_connections: int | None = None,
    max_samples: int | None = None,
    max_tasks: int | None = None,
    retry_attempts: int | None = None,
    display: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    kind: str = "all",
) -> tuple[bool, list[EvalLog]]:
    """Evaluate every task x defence on every target; returns (all finished, logs).

    The logs go to ``log_dir`` as an inspect eval set: running the same call again
    after an interruption reuses the finished tasks and completes the others
    (finished samples of an interrupted task are kept too).  ``inspect view
    --log-dir LOG_DIR`` shows every sample; :func:`build_report` makes the tables.

    ``targets`` are inspect model names: ``vlmguard-openai/<service>/<model>`` for a
    vLLM server (with ``<SERVICE>_BASE_URL`` and ``<SERVICE>_API_KEY`` set),
    ``vlmguard-transformers/<hub id or folder>`` for a local model (``target_args``
    go to its backend), or any other provider.  Samples run concurrently up to
    ``max_connections`` per model and ``max_samples`` per task.

    ``temperature``, ``top_p`` and ``seed`` are the targets' sampling settings, for
    served and local targets alike (``None``: the target's default; SIUO samples at
    its published temperature 1.0).  ``kind`` is MM-SafetyBench's image kind: ``SD``,
    ``TYPO``, ``SD_TYPO`` or ``all`` (each rated apart); another kind than ``all``
    without an ``mm_safetybench`` task is a :class:`ConfigurationError`.
    """
    if not targets:
        raise ConfigurationError("give at least one target model")
    for spec in tasks:
        parse_spec(spec)
    check_kind(tasks, kind)
    unknown = [d for d in defenses if d not in DEFENSES]
    if unknown:
        raise ConfigurationError(
            f"unknown defence {unknown[0]!r}; choose one of {', '.join(DEFENSES)}"
        )
    # VLGuard's unsafe subsets are judged by phrases alone; everything else needs a model.
    phrase_judged = {"vlguard:unsafes", "vlguard:safe_unsafes"}
    needs_model = judge == "paper" or (
        judge == "published" and any(spec not in phrase_judged for spec in tasks)
    )
    if needs_model and judge_model is None:
        raise JudgeError(
            f"the {judge} judge needs a model: pass judge_model (--judge-model), "
            "or use the offline judge"
        )
    if "vlmguard" in defenses and rewriter is None:
        # One rewriter for every task: a local rewriter model is loaded once, and a
        # wrong backend setting fails here, before any sample runs.
        from ..settings import RewriterSettings

        try:
            rewriter = RewriterSettings.from_options(rewriter_backend, rewriter_args).build()
        except ConfigurationError as exc:  # a missing or unknown backend argument
            raise ConfigurationError(
                f"the vlmguard defence's {rewriter_backend!r} rewriter backend: {exc} "
                "(give the rewriter model with --rewriter-model, other settings with "
                "--rewriter-arg KEY=VALUE)"
            ) from exc
    built = build_tasks(
        tasks,
        defenses,
        data_dir=data_dir,
        judge=judge,
        judge_model=judge_model,
        rewriter=rewriter,
        rewriter_backend=rewriter_backend,
        rewriter_args=rewriter_args,
        missing_images=missing_images,
        max_tokens=max_tokens,
        image_dirs=image_dirs,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        kind=kind,
    )
    return eval_set(
        built,
        log_dir=str(log_dir),
        model=list(targets),  # type: ignore[arg-type]
        model_args=target_args or {},
        limit=limit,
        max_connections=max_connections,
        max_samples=max_samples,
        max_tasks=max_tasks,
        retry_attempts=retry_attempts,
        display=display,  # type: ignore[arg-type]
    )
