"""``vlmguard train synth|sft|grpo``: the command group that makes a rewriter.

Imports nothing heavy at module level: torch, TRL and ``datasets`` load inside the
commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["grpo", "register", "sft", "synth"]

_TRL_COMMAND = {
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
    "add_help_option": False,
}


def _spec_overrides(
    backend: str | None, model: str | None, base_url: str | None
) -> dict[str, Any] | None:
    if backend is None and model is None and base_url is None:
        return None
    spec: dict[str, Any] = {}
    if backend is not None:
        spec["backend"] = backend
    if model is not None:
        spec["model"] = model
    if base_url is not None:
        spec["options"] = {"base_url": base_url}
    return spec


def _merge_spec(current: Any, override: dict[str, Any] | None) -> Any:
    if override is None:
        return current
    base = current.model_dump() if current is not None else {}
    options = {**base.get("options", {}), **override.pop("options", {})}
    return {**base, **override, "options": options}


def synth(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings (see examples/train).")
    ] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="Source file (VLGuard JSON or JSONL).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="vlguard or jsonl.")] = None,
    image_root: Annotated[
        Path | None, typer.Option(help="Folder the source's image paths are relative to.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Dataset folder (resumed if present).")
    ] = None,
    teacher_backend: Annotated[str | None, typer.Option(help="Teacher's backend.")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Teacher model.")] = None,
    teacher_base_url: Annotated[str | None, typer.Option(help="Teacher server URL.")] = None,
    target_backend: Annotated[str | None, typer.Option(help="Target VLM's backend.")] = None,
    target_model: Annotated[str | None, typer.Option(help="Target VLM.")] = None,
    target_base_url: Annotated[str | None, typer.Option(help="Target server URL.")] = None,
    judge_backend: Annotated[str | None, typer.Option(help="Judge's backend.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model.")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Judge server URL.")] = None,
    verify: Annotated[
        bool | None,
        typer.Option("--verify/--no-verify", help="Keep only rewrites judged safe (and helpful)."),
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="Samples processed at once.")] = None,
    limit: Annotated[int | None, typer.Option(help="Process only this many samples.")] = None,
    max_benign_fraction: Annotated[
        float | None, typer.Option(help="Largest share of benign samples (default 0.1).")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Also reprocess the samples recorded as rejected (failed ones are always "
            "retried); accepted samples are never redone.",
        ),
    ] = False,
) -> None:
    """Synthesise rewriter training data with a teacher model (three stages).

    Exit status: 0 when every sample was accepted or rejected; 1 when some samples
    failed (a teacher, target or judge call raised: server down, timeout, rate
    limit...), which running the same command again retries; 2 for invalid settings
    or source data; 130 when interrupted (rerun to resume).
    """
    from rich.console import Console
    from rich.table import Table

    from ..errors import VLMGuardError
    from .config import SynthConfig
    from .synthesize import synthesize

    err = Console(stderr=True)
    overrides: dict[str, Any] = {
        "input": input,
        "format": fmt,
        "image_root": image_root,
        "output": output,
        "verify": verify,
        "concurrency": concurrency,
        "limit": limit,
        "max_benign_fraction": max_benign_fraction,
    }
    specs = {
        "teacher": _spec_overrides(teacher_backend, teacher_model, teacher_base_url),
        "target": _spec_overrides(target_backend, target_model, target_base_url),
        "judge": _spec_overrides(judge_backend, judge_model, judge_base_url),
    }
    try:
        if config is not None:
            settings = SynthConfig.from_yaml(config)
            data = settings.model_dump(exclude_unset=True)
            for role, override in specs.items():
                data[role] = _merge_spec(getattr(settings, role), override)
            data.update({k: v for k, v in overrides.items() if v is not None})
            settings = SynthConfig.build(**data)
        else:
            data = {k: v for k, v in overrides.items() if v is not None}
            data.update({role: spec for role, spec in specs.items() if spec is not None})
            settings = SynthConfig.build(**data)
        summary = synthesize(settings, progress=progress, retry_failed=retry_failed)
    except VLMGuardError as exc:
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(code=2) from exc

    table = Table(title=f"synthesis: {summary.output}")
    table.add_column("samples")
    table.add_column("count", justify="right")
    table.add_row("accepted", str(summary.accepted))
    table.add_row("  of which benign", str(summary.benign_accepted))
    for reason, count in sorted(summary.rejected.items()):
        table.add_row(f"rejected: {reason}", str(count))
    for error, count in sorted(summary.failed.items()):
        table.add_row(f"failed: {error}", str(count))
    table.add_row("done in earlier runs", str(summary.resumed))
    if summary.retried:
        table.add_row("retried from earlier runs", str(summary.retried))
    Console().print(table)

    if summary.failed:
        from rich.markup import escape

        roles = ", ".join(f"{role}: {n}" for role, n in sorted(summary.failed_by_role.items()))
        journal = escape(str(summary.output / "stages.jsonl"))
        err.print(
            f"[bold yellow]{summary.failed_total} samples failed[/] ({roles}; details in "
            f"{journal}). They are not recorded as done: once the models are reachable, "
            "run the same command again to retry them."
        )
        # Non-zero so scripts and schedulers notice an incomplete dataset.
        raise typer.Exit(code=1)
    if summary.rejected:
        err.print("Rejections are final; add --retry-failed to reprocess them too.")


def sft(ctx: typer.Context) -> None:
    """Fine-tune the rewriter with TRL's SFTTrainer (flags: `vlmguard train sft --help`).

    Takes TRL's arguments: --config FILE.yaml, --model_name_or_path, --dataset_dir,
    --output_dir, --use_peft, --learning_rate, ...
    """
    from .sft import main

    _run_trainer(main, ctx.args)


def grpo(ctx: typer.Context) -> None:
    """Train the rewriter with TRL's GRPOTrainer (flags: `vlmguard train grpo --help`).

    Takes TRL's arguments plus --rewards, --target_model/--judge_model and their
    --*_base_url for the judge reward.
    """
    from .grpo import main

    _run_trainer(main, ctx.args)


def _run_trainer(main: Any, args: list[str]) -> None:
    from ..errors import VLMGuardError

    try:
        output = main(args)
    except VLMGuardError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"saved the trained rewriter to {output}")


def register(app: typer.Typer) -> None:
    """Add the ``train`` command group to the ``vlmguard`` application."""
    train_app = typer.Typer(
        help="Make a rewriter: synthesise data (synth), fine-tune (sft), reinforce (grpo).",
        no_args_is_help=True,
    )
    train_app.command("synth")(synth)
    train_app.command("sft", **_TRL_COMMAND)(sft)  # type: ignore[arg-type]
    train_app.command("grpo", **_TRL_COMMAND)(grpo)  # type: ignore[arg-type]
    app.add_typer(train_app, name="train")
