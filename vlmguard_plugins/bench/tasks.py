"""The benchmark tasks: ``Task(dataset, solver=defence, scorer=judge)``.

Each task function is an inspect ``@task`` (``inspect eval vlmguard_plugins/bench/tasks.py@figstep
-T data_dir=...`` works as well as ``vlmguard bench run``).  Common arguments:

- ``data_dir``: the folder holding the benchmarks' published files;
- ``defense``: ``none``, ``static_shield``, ``ecso`` or ``vlmguard`` (see :mod:`.defenses`);
  for ``vlmguard``, ``rewriter`` (a ready :class:`~vlmguard_plugins.Rewriter`) or
  ``rewriter_backend`` + ``rewriter_args``;
- ``judge``: ``offline``, ``published`` or ``paper``, with ``judge_model``;
- ``missing_images``: ``error`` (default) or ``skip`` (with a warning naming them);
- ``max_tokens``: the target's answer length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset
from inspect_ai.model import GenerateConfig, Model

from ..errors import ConfigurationError
from ..rewriter import Rewriter
from .datasets import (
    MMSB_IMAGE_KINDS,
    BenchmarkData,
    load_figstep,
    load_mm_safetybench,
    load_mmvet,
    load_siuo,
    load_vlguard,
    require_images,
)
from .defenses import DEFENSES, defense_solver
from .metrics import judged_mean_reducer, majority_vote
from .scorers import JUDGES, judge_scorer

SIUO_RESPONSES = 3
"""SIUO's published protocol judges three responses per item and takes the majority."""


def _build(
    benchmark: str,
    data: BenchmarkData,
    *,
    defense: str,
    judge: str,
    judge_model: str | Model | None,
    missing_images: str,
    max_tokens: int,
    rewriter: Rewriter | None,
    rewriter_backend: str,
    rewriter_args: dict[str, Any] | None,
    epochs: int | Epochs | None = None,
    extra: dict[str, Any] | None = None,
) -> Task:
    if defense not in DEFENSES:
        raise ConfigurationError(
            f"unknown defence {defense!r}; choose one of {', '.join(DEFENSES)}"
        )
    if judge not in JUDGES:
        raise ConfigurationError(f"unknown judge {judge!r}; choose one of {', '.join(JUDGES)}")
    samples = require_images(data, missing_images)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if defense == "vlmguard":
        kwargs = {"rewriter": rewriter, "backend": rewriter_backend, "backend_args": rewriter_args}
    return Task(
        dataset=MemoryDataset(samples, name=data.name),
        solver=defense_solver(defense, **kwargs),
        scorer=judge_scorer(benchmark, judge, judge_model),
        config=GenerateConfig(max_tokens=max_tokens),
        epochs=epochs or Epochs(1, judged_mean_reducer()),
        display_name=f"{data.name}/{defense}",
        metadata={
            "benchmark": benchmark,
            "dataset": data.name,
            "defense": defense,
            "judge": judge,
            "judge_model": judge_model,
            "skipped_missing_images": [p for p in data.missing_images if missing_images == "skip"],
            **(extra or {}),
        },
    )


@task
def figstep(
    data_dir: str,
    subset: str = "tiny",
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """FigStep SafeBench (``subset`` tiny or full): typographic jailbreak images."""
    return _build(
        "figstep",
        load_figstep(data_dir, subset, image_dir),  # type: ignore[arg-type]
        **_common(locals()),
    )


@task
def mm_safetybench(
    data_dir: str,
    subset: str = "all",
    kinds: Sequence[str] = MMSB_IMAGE_KINDS,
    scenarios: Sequence[str] | None = None,
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """MM-SafetyBench (``subset`` all or tiny; image ``kinds`` SD, TYPO, SD_TYPO)."""
    data = load_mm_safetybench(data_dir, kinds, subset, scenarios, image_dir)  # type: ignore[arg-type]
    return _build("mm_safetybench", data, **_common(locals()), extra={"kinds": list(kinds)})


@task
def vlguard(
    data_dir: str,
    subset: str = "unsafes",
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """VLGuard test (``subset`` unsafes, safe_unsafes or safe_safes)."""
    data = load_vlguard(data_dir, subset, image_dir)  # type: ignore[arg-type]
    return _build("vlguard", data, **_common(locals()))


@task
def siuo(
    data_dir: str,
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    responses: int = SIUO_RESPONSES,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """SIUO: ``responses`` answers per item, each judged, the majority kept."""
    return _build(
        "siuo",
        load_siuo(data_dir, image_dir),
        **_common(locals()),
        epochs=Epochs(responses, majority_vote()),
    )


@task
def mmvet(
    data_dir: str,
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """MM-Vet, the utility benchmark: how much a defence costs in helpfulness."""
    return _build("mmvet", load_mmvet(data_dir, image_dir), **_common(locals()))


_COMMON = (
    "defense",
    "judge",
    "judge_model",
    "missing_images",
    "max_tokens",
    "rewriter",
    "rewriter_backend",
    "rewriter_args",
)


def _common(arguments: dict[str, Any]) -> dict[str, Any]:
    return {name: arguments[name] for name in _COMMON}


TASKS: dict[str, Callable[..., Task]] = {
    "siuo": siuo,
    "mm_safetybench": mm_safetybench,
    "vlguard": vlguard,
    "figstep": figstep,
    "mmvet": mmvet,
}
"""Task functions by name."""

SUBSETS: dict[str, tuple[str, ...]] = {
    "figstep": ("tiny", "full"),
    "mm_safetybench": ("all", "tiny"),
    "vlguard": ("unsafes", "safe_unsafes", "safe_safes"),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """``name`` or ``name:subset`` checked against the known tasks: (name, subset or "")."""
    name, _, subset = spec.partition(":")
    name = name.replace("-", "_")
    if name not in TASKS:
        raise ConfigurationError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if subset and subset not in SUBSETS.get(name, ()):
        raise ConfigurationError(
            f"unknown subset {subset!r} of {name}; choose one of "
            f"{', '.join(SUBSETS.get(name, ())) or '(none)'}"
        )
    return name, subset


def build_task(spec: str, **kwargs: Any) -> list[Task]:
    """Tasks for a spec ``name`` or ``name:subset`` (``vlguard`` alone means its three subsets)."""
    name, subset = parse_spec(spec)
    if subset:
        return [TASKS[name](subset=subset, **kwargs)]
    if name == "vlguard":
        return [TASKS[name](subset=s, **kwargs) for s in SUBSETS["vlguard"]]
    return [TASKS[name](**kwargs)]
