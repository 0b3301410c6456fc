"""``vlmguard bench``: prepare data, run benchmarks, report results.

Imports nothing heavy at module import (inspect_ai, torch and matplotlib load inside
the commands), so ``vlmguard --help`` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog

__all__ = ["bench_app", "paper", "prepare", "register", "report", "run"]

_console = Console()
_err_console = Console(stderr=True)

bench_app = typer.Typer(
    name="bench",
    help="Measure a guard on a VLM: SIUO, MM-SafetyBench, VLGuard, FigStep, MM-Vet.",
    no_args_is_help=True,
)

_DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="VLMGUARD_DATA_DIR",
        help="Folder with the benchmarks' published files (figstep/, siuo/, ...).",
    ),
]


# The options `bench run` and `bench paper` share.  Each command still names them in its
# own signature: typer builds a command's options from its parameters.
_RewriterBackend = Annotated[
    str, typer.Option(help="Backend of the vlmguard defence: openai, transformers, ...")
]
_RewriterModel = Annotated[
    str | None, typer.Option(envvar="VLMGUARD_MODEL", help="The rewriter model.")
]
_RewriterBaseUrl = Annotated[
    str | None, typer.Option(envvar="VLMGUARD_BASE_URL", help="For --rewriter-backend openai.")
]
_BaseUrls = Annotated[
    list[str] | None,
    typer.Option(
        help="SERVICE=URL: the server of the vlmguard-openai/SERVICE/... (or "
        "openai-api/SERVICE/...) models; sets SERVICE_BASE_URL (repeatable)."
    ),
]
_RewriterArgs = Annotated[
    list[str] | None,
    typer.Option(help="A rewriter setting (timeout_s...) or backend argument KEY=VALUE."),
]
_TargetArgs = Annotated[
    list[str] | None, typer.Option("--target-arg", "-M", help="Target model arg KEY=VALUE.")
]
_ImageDirs = Annotated[
    list[str] | None,
    typer.Option(help="TASK=FOLDER: where a task's images are (e.g. siuo=/data/siuo/images)."),
]
_Limit = Annotated[int | None, typer.Option(help="At most this many samples per task.")]
_MaxTokens = Annotated[int, typer.Option(help="Longest target answer.")]
_MaxConnections = Annotated[int | None, typer.Option(help="Concurrent requests per model.")]
_MaxSamples = Annotated[int | None, typer.Option(help="Concurrent samples per task.")]
_RetryAttempts = Annotated[
    int | None, typer.Option(help="Retries of a failed task within this run.")
]
_Display = Annotated[str | None, typer.Option(help="inspect display: full, rich, plain, none.")]


def _pairs(values: list[str] | None, option: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} takes KEY=VALUE, got {item!r}")
        result[key.strip()] = _literal(value.strip())
    return result


def _literal(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _rewriter_args(
    values: list[str] | None, model: str | None, base_url: str | None
) -> dict[str, Any]:
    args = _pairs(values, "--rewriter-arg")
    if model:
        args["model"] = model
    if base_url:
        args["base_url"] = base_url
    return args


def _print_statuses(logs: Sequence[EvalLog]) -> None:
    for log in logs:
        meta = log.eval.metadata or {}
        _console.print(
            f"{meta.get('dataset', log.eval.task)} / {meta.get('defense')} / {log.eval.model}: "
            f"{log.status}",
            soft_wrap=True,
        )


def _fail(exc: Exception) -> typer.Exit:
    _err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", soft_wrap=True)
    return typer.Exit(code=2)


@bench_app.command()
def prepare(
    data_dir: _DataDir = Path("benchmarks"),
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the images (default <data-dir>/mm-safetybench/imgs)."),
    ] = None,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Only this scenario (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Redraw images that exist.")] = False,
) -> None:
    """Render MM-SafetyBench's TYPO images (the key phrases drawn as text) locally."""
    from ..errors import VLMGuardError
    from .typo import render_typo_images

    with Progress(
        TextColumn("[bold]TYPO images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console,
    ) as progress:
        bar = progress.add_task("render", total=None)
        try:
            written = render_typo_images(
                data_dir,
                out,
                scenarios=scenario,
                overwrite=overwrite,
                progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
        except VLMGuardError as exc:
            raise _fail(exc) from exc
    target = out or data_dir / "mm-safetybench" / "imgs"
    _console.print(f"wrote {len(written)} TYPO images under {target}")


@bench_app.command()
def run(
    task: Annotated[
        list[str],
        typer.Option(
            help="siuo, mm_safetybench[:tiny], vlguard[:unsafes|safe_unsafes|safe_safes], "
            "figstep[:tiny|full], mmvet (repeatable)."
        ),
    ],
    target: Annotated[
        list[str],
        typer.Option(
            help="inspect model: vlmguard-openai/<service>/<model> (a served model, see "
            "--base-url), vlmguard-transformers/<model or folder>, ... (repeatable)."
        ),
    ],
    defense: Annotated[
        list[str],
        typer.Option(help="none, static_shield, adashield_s, ecso, vlmguard (repeatable)."),
    ] = ["none", "vlmguard"],  # noqa: B006 (typer needs a list default)
    judge: Annotated[str, typer.Option(help="offline, published or paper.")] = "offline",
    judge_model: Annotated[
        str | None,
        typer.Option(help="inspect model for the judge (e.g. vlmguard-openai/judge/<model>)."),
    ] = None,
    base_url: _BaseUrls = None,
    data_dir: _DataDir = Path("benchmarks"),
    log_dir: Annotated[Path, typer.Option(help="Where the inspect logs go.")] = Path("logs/bench"),
    rewriter_backend: _RewriterBackend = "openai",
    rewriter_model: _RewriterModel = None,
    rewriter_base_url: _RewriterBaseUrl = None,
    rewriter_arg: _RewriterArgs = None,
    target_arg: _TargetArgs = None,
    image_dir: _ImageDirs = None,
    skip_missing_images: Annotated[
        bool, typer.Option(help="Run without records whose image is missing (listed in a warning).")
    ] = False,
    limit: _Limit = None,
    max_tokens: _MaxTokens = 512,
    temperature: Annotated[
        float | None,
        typer.Option(help="Target sampling temperature (default: the target's; SIUO: 1.0)."),
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="Target nucleus sampling top_p.")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Target sampling seed (epoch k uses seed + k - 1).")
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="MM-SafetyBench image kind: SD, TYPO, SD_TYPO or all (needs an "
            "mm_safetybench task; other tasks have one kind of image)."
        ),
    ] = "all",
    max_connections: _MaxConnections = None,
    max_samples: _MaxSamples = None,
    max_tasks: Annotated[int | None, typer.Option(help="Tasks run at the same time.")] = None,
    retry_attempts: _RetryAttempts = None,
    display: _Display = None,
) -> None:
    """Run tasks x defences x targets as one resumable inspect eval set (rerun to resume)."""
    from ..errors import VLMGuardError
    from . import paper  # noqa: F401  (registers the vlmguard-openai provider)
    from .run import run_benchmark

    _service_urls(base_url)
    rewriter_args = _rewriter_args(rewriter_arg, rewriter_model, rewriter_base_url)
    try:
        success, logs = run_benchmark(
            task,
            target,
            defense,
            data_dir=data_dir,
            log_dir=log_dir,
            judge=judge,
            judge_model=judge_model,
            rewriter_backend=rewriter_backend,
            rewriter_args=rewriter_args,
            missing_images="skip" if skip_missing_images else "error",
            max_tokens=max_tokens,
            image_dirs={k: str(v) for k, v in _pairs(image_dir, "--image-dir").items()},
            limit=limit,
            target_args=_pairs(target_arg, "--target-arg"),
            max_connections=max_connections,
            max_samples=max_samples,
            max_tasks=max_tasks,
            retry_attempts=retry_attempts,
            display=display,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            kind=kind,
        )
    except VLMGuardError as exc:
        raise _fail(exc) from exc
    _print_statuses(logs)
    _console.print(f"logs: {log_dir}", soft_wrap=True)
    _console.print(f"view them with: inspect view --log-dir {log_dir}", soft_wrap=True)
    if not success:
        _err_console.print("[yellow]some tasks did not finish; run the same command to resume[/]")
        raise typer.Exit(code=1)


@bench_app.command()
def report(
    log_dir: Annotated[Path, typer.Argument(help="The folder given to `bench run --log-dir`.")],
    out: Annotated[
        Path | None, typer.Option(help="Where to write the report (default LOG_DIR/report).")
    ] = None,
) -> None:
    """Markdown and CSV tables per task, defence, target and category, and PNG plots."""
    from rich.table import Table

    from ..errors import VLMGuardError
    from .report import ALL, build_report, collect_rows, format_percent

    try:
        written = build_report(log_dir, out)
        rows = [r for r in collect_rows(log_dir) if r.category == ALL]
    except VLMGuardError as exc:
        raise _fail(exc) from exc
    table = Table(title="benchmark summary")
    columns = ("task", "defense", "target", "run", "skipped", "unjudged", "safety", "helpful")
    for column in (*columns, "ASR", "rewriter call p50 ms", "extra calls"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.task,
            row.defense,
            row.target,
            str(row.samples),
            str(row.skipped),
            str(row.unjudged),
            format_percent(row.safety_rate),
            format_percent(row.helpfulness),
            format_percent(row.attack_success_rate),
            "-" if math.isnan(row.rewriter_call_p50_ms) else f"{row.rewriter_call_p50_ms:.0f}",
            str(row.extra_target_calls),
        )
    _console.print(table)
    for path in written:
        _console.print(f"wrote {path}", soft_wrap=True)


def _service_urls(values: list[str] | None) -> None:
    """``SERVICE=URL``: where ``vlmguard-openai/SERVICE/MODEL`` (and inspect's
    ``openai-api/SERVICE/MODEL``) models are served."""
    import os

    for service, url in _pairs(values, "--base-url").items():
        prefix = service.upper().replace("-", "_")
        os.environ[f"{prefix}_BASE_URL"] = str(url)
        # A local vLLM server takes any key, and inspect asks for one.
        os.environ.setdefault(f"{prefix}_API_KEY", "EMPTY")


@bench_app.command()
def paper(
    target: Annotated[
        list[str],
        typer.Option(
            help="inspect model of a VLM to guard: vlmguard-openai/<service>/<model> for a "
            "served model, or any inspect model (repeatable)."
        ),
    ],  # fmt: skip
    judge_model: Annotated[
        str,
        typer.Option(help="inspect model for the judge (e.g. vlmguard-openai/judge/<model>)."),
    ],
    base_url: _BaseUrls = None,
    judge: Annotated[str, typer.Option(help="paper (0-10 safety) or published.")] = "paper",
    task: Annotated[
        list[str] | None,
        typer.Option(help="Instead of siuo, mm_safetybench, vlguard and mmvet (repeatable)."),
    ] = None,
    defense: Annotated[
        list[str] | None, typer.Option(help="Instead of every defence (repeatable).")
    ] = None,
    data_dir: _DataDir = Path("benchmarks"),
    out: Annotated[
        Path, typer.Option(help="Where the logs (OUT/logs) and the report (OUT/report) go.")
    ] = Path("reports/paper"),
    # The options of `bench run`, with the same names, help and defaults.
    rewriter_backend: _RewriterBackend = "openai",
    rewriter_model: _RewriterModel = None,
    rewriter_base_url: _RewriterBaseUrl = None,
    rewriter_arg: _RewriterArgs = None,
    target_arg: _TargetArgs = None,
    image_dir: _ImageDirs = None,
    skip_missing_images: Annotated[
        bool,
        typer.Option(help="Run without records whose image is missing (counted in the report)."),
    ] = False,
    limit: _Limit = None,
    max_tokens: _MaxTokens = 512,
    temperature: Annotated[
        float | None,
        typer.Option(help="Targets' sampling temperature (default: SIUO's published one)."),
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="Targets' nucleus sampling.")] = None,
    seed: Annotated[int | None, typer.Option(help="Targets' sampling seed.")] = None,
    max_connections: _MaxConnections = None,
    max_samples: _MaxSamples = None,
    retry_attempts: _RetryAttempts = None,
    display: _Display = None,
) -> None:
    """The paper's comparison: SIUO, MM-SafetyBench, VLGuard and MM-Vet, every defence,
    every target; then the tables and plots (rerun the same command to resume)."""
    from ..errors import VLMGuardError
    from .paper import PAPER_DEFENSES, PAPER_TASKS, run_paper

    _service_urls(base_url)
    sampling: dict[str, Any] = {"temperature": temperature, "top_p": top_p, "seed": seed}
    rewriter_args = _rewriter_args(rewriter_arg, rewriter_model, rewriter_base_url)
    try:
        # The shared options go on as `bench run` hands them to run_benchmark: one set of
        # names from the two signatures above.
        result = run_paper(
            target,
            data_dir=data_dir,
            out_dir=out,
            judge_model=judge_model,
            judge=judge,
            tasks=task or PAPER_TASKS,
            defenses=defense or PAPER_DEFENSES,
            rewriter_backend=rewriter_backend,
            rewriter_args=rewriter_args,
            missing_images="skip" if skip_missing_images else "error",
            max_tokens=max_tokens,
            image_dirs={k: str(v) for k, v in _pairs(image_dir, "--image-dir").items()},
            limit=limit,
            target_args=_pairs(target_arg, "--target-arg"),
            max_connections=max_connections,
            max_samples=max_samples,
            retry_attempts=retry_attempts,
            display=display,
            **{k: v for k, v in sampling.items() if v is not None},
        )
    except VLMGuardError as exc:
        raise _fail(exc) from exc
    _print_statuses(result.logs)
    for path in result.written:
        _console.print(f"wrote {path}", soft_wrap=True)
    _console.print(
        f"logs: {result.log_dir} (inspect view --log-dir {result.log_dir})", soft_wrap=True
    )
    if not result.success:
        _err_console.print("[yellow]some tasks did not finish; run the same command to resume[/]")
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group to the ``vlmguard`` app."""
    app.add_typer(bench_app, name="bench")
