"""The benchmark tasks: ``Task(dataset, solver=defence, scorer=judge)``.

Each task function is an inspect ``@task`` (``inspect eval vlmguard_plugins/bench/tasks.py@figstep
-T data_dir=...`` works as well as ``vlmguard bench run``).  Common arguments:

- ``data_dir``: the folder holding the benchmarks' published files;
- ``defense``: ``none``, ``static_shield``, ``ecso`` or ``vlmguard`` (see :mod:`.defenses`);
  for ``vlmguard``, ``rewriter`` (a ready :class:`~vlmguard_plugins.Rewriter`) or
  ``rewriter_backend`` + ``rewriter_args``;
- ``judge``: ``offline``, ``published`` or ``paper``, with ``judge_model``;
- ``missing_images``: ``error`` (default) or ``skip`` (with a warning naming them);
- ``max_tokens``: the target's answer length;
- ``temperature``, ``top_p``, ``seed``: the target's sampling (``None``: the target's
  own default; local ``vlmguard-transformers`` targets are greedy then).  With a seed,
  epoch ``k`` of a sample is generated with ``seed + k - 1``, so SIUO's three responses
  differ and a rerun gives the same three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset
from inspect_ai.model import GenerateConfig, Model
from inspect_ai.solver import Generate, Solver, TaskState, solver

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
from .metrics import judged_mean_reducer, score_metrics, siuo_most_frequent
from .scorers import JUDGES, judge_scorer

__all__ = [
    "GROUPS",
    "MMSB_KINDS",
    "SIUO_RESPONSES",
    "SIUO_TEMPERATURE",
    "SUBSETS",
    "TASKS",
    "build_task",
    "epoch_seeded",
    "figstep",
    "mm_safetybench",
    "mmvet",
    "parse_spec",
    "siuo",
    "vlguard",
]

SIUO_RESPONSES = 3
"""SIUO's published protocol judges three responses per item (``n=3``) and keeps the most
frequent verdict."""

SIUO_TEMPERATURE = 1.0
"""SIUO's responses are sampled (``eval/generation-gpt4o-gen.py`` lines 40-58 ask for
``n=3`` at the API's default temperature, 1.0): the target's temperature when none is given."""

MMSB_KINDS = (*MMSB_IMAGE_KINDS, "all")
"""``kind`` of the MM-SafetyBench task: one image kind, or ``all`` three (rated apart)."""

GROUPS: dict[str, list[tuple[str, ...]]] = {
    "mm_safetybench": [("kind",), ("scenario",), ("kind", "scenario")],
    "mmvet": [("capabilities",)],
}
"""Metadata groups each benchmark's rates are also given for: MM-SafetyBench's official
rate is per image kind and scenario; MM-Vet's per capability."""


@solver
def epoch_seeded(inner: Solver, seed: int) -> Solver:
    """``inner`` with the target's generations seeded ``seed + epoch - 1``.

    inspect sends one config to every epoch; with a fixed seed the epochs of a sample
    would be the same response, and SIUO's vote over three responses would be a vote
    over one.  Calls a defence makes through ``get_model()`` itself (ECSO's check and
    caption) keep the task's seed.
    """

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        epoch_seed = seed + state.epoch - 1

        async def seeded(state: TaskState, tool_calls: Any = "loop", **config: Any) -> TaskState:
            config.setdefault("seed", epoch_seed)
            return await generate(state, tool_calls, **config)

        return await inner(state, seeded)

    return solve


def _build(
    benchmark: str,
    data: BenchmarkData,
    *,
    defense: str,
    judge: str,
    judge_model: str | Model | None,
    missing_images: str,
    max_tokens: int,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    rewriter: Rewriter | None,
    rewriter_backend: str,
    rewriter_args: dict[str, Any] | None,
    epochs: Epochs | None = None,
    extra: dict[str, Any] | None = None,
    judge_options: dict[str, Any] | None = None,
) -> Task:
    if defense not in DEFENSES:
        raise ConfigurationError(
            f"unknown defence {defense!r}; choose one of {', '.join(DEFENSES)}"
        )
    if judge not in JUDGES:
        raise ConfigurationError(f"unknown judge {judge!r}; choose one of {', '.join(JUDGES)}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigurationError(f"top_p must be in (0, 1], got {top_p}")
    if temperature is not None and temperature < 0.0:
        raise ConfigurationError(f"temperature must be 0 or more, got {temperature}")
    samples = require_images(data, missing_images)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    if defense == "vlmguard":
        kwargs = {"rewriter": rewriter, "backend": rewriter_backend, "backend_args": rewriter_args}
    epochs = epochs or Epochs(1, judged_mean_reducer())
    defended = defense_solver(defense, **kwargs)
    if seed is not None and epochs.epochs > 1:
        defended = epoch_seeded(defended, seed)
    sampling = GenerateConfig(temperature=temperature, top_p=top_p, seed=seed)
    return Task(
        dataset=MemoryDataset(samples, name=data.name),
        solver=defended,
        scorer=judge_scorer(benchmark, judge, judge_model, **(judge_options or {})),
        metrics=score_metrics(GROUPS.get(benchmark, ())),
        config=GenerateConfig(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
        ),
        epochs=epochs,
        display_name=f"{data.name}/{defense}",
        metadata={
            "benchmark": benchmark,
            "dataset": data.name,
            "defense": defense,
            "judge": judge,
            "judge_model": None if judge_model is None else str(judge_model),
            "sampling": sampling.model_dump(exclude_none=True),
            "skipped_missing_images": [p for p in data.missing_images if missing_images == "skip"],
            **(extra or {}),
        },
    )


# Each task spells out every parameter, though most are common to all (see _COMMON):
# inspect reads a task's signature to check `-T name=value` (a misspelt name is warned
# about) and to log the task's arguments with their defaults; **kwargs would hide both.
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
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
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
    kind: str = "all",
    scenarios: Sequence[str] | None = None,
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """MM-SafetyBench (``subset`` all or tiny) with the ``kind`` of image: SD, TYPO, SD_TYPO or all.

    The published protocol rates each image kind apart, per scenario: the task's
    metrics give the attack success rate per ``kind``, per ``scenario`` and per
    ``kind/scenario`` (with ``all`` the overall figure pools the three kinds, which the
    official evaluation never reports).
    """
    if kind not in MMSB_KINDS:
        raise ConfigurationError(
            f"unknown MM-SafetyBench image kind {kind!r}; choose one of {', '.join(MMSB_KINDS)}"
        )
    kinds = MMSB_IMAGE_KINDS if kind == "all" else (kind,)
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
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    helpfulness: str = "win_rate",
) -> Task:
    """VLGuard test (``subset`` unsafes, safe_unsafes or safe_safes).

    ``helpfulness`` on ``safe_safes`` under the published judge: ``win_rate`` (the
    official pairwise protocol, with the image) or ``yes_no`` (our text-only variant).
    """
    data = load_vlguard(data_dir, subset, image_dir)  # type: ignore[arg-type]
    return _build("vlguard", data, **_common(locals()), judge_options={"helpfulness": helpfulness})


@task
def siuo(
    data_dir: str,
    defense: str = "none",
    judge: str = "offline",
    judge_model: str | Model | None = None,
    image_dir: str | None = None,
    missing_images: str = "error",
    max_tokens: int = 512,
    temperature: float | None = SIUO_TEMPERATURE,
    top_p: float | None = None,
    seed: int | None = None,
    responses: int = SIUO_RESPONSES,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
) -> Task:
    """SIUO: ``responses`` sampled answers per item, each judged, the most frequent verdict kept.

    As published: three responses (epochs) sampled at temperature 1.0 unless
    ``temperature`` says otherwise, each judged for safety and effectiveness, and per
    item the most frequent verdict of each (:func:`~.metrics.siuo_most_frequent`).
    """
    if responses < 1:
        raise ConfigurationError(f"SIUO needs at least one response per item, got {responses}")
    return _build(
        "siuo",
        load_siuo(data_dir, image_dir),
        **_common(locals()),
        epochs=Epochs(responses, siuo_most_frequent()),
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
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    rewriter: Rewriter | None = None,
    rewriter_backend: str = "openai",
    rewriter_args: dict[str, Any] | None = None,
    grading_runs: int = 1,
) -> Task:
    """MM-Vet, the utility benchmark: how much a defence costs in helpfulness.

    ``grading_runs``: how many times the grader scores each answer (the evaluator's
    ``--num_run``; its paper used 5), averaged.  Rates are given per capability, each
    question counted under every capability it lists.
    """
    return _build(
        "mmvet",
        load_mmvet(data_dir, image_dir),
        **_common(locals()),
        judge_options={"runs": grading_runs} if judge != "offline" else None,
    )


_COMMON = (
    "defense",
    "judge",
    "judge_model",
    "missing_images",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
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
"""The subsets a task spec may name (``figstep:full``); a task not listed has none."""


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
