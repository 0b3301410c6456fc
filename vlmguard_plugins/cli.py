"""The ``vlmguard`` command line.

``vlmguard rewrite``, ``vlmguard demo`` and ``vlmguard --version`` live here; the
gateway (``serve``), training (``train``) and benchmark (``bench``) commands are
registered from their own packages when those are present.
"""

from __future__ import annotations

import json
import os
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from . import __version__
from .policy import FAILURE_POLICIES
from .types import RewriteResult

app = typer.Typer(
    name="vlmguard",
    help="Guard a vision-language model by rewriting risky image + text prompts.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
_RISK_STYLE = {
    "none": "green",
    "low": "cyan",
    "medium": "yellow",
    "high": "bold red",
    "unknown": "magenta",
}


def _version(value: bool) -> None:
    if value:
        console.print(f"vlmguard-plugins {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """vlmguard: a reasoning rewriter in front of any vision-language model."""


def _policy(value: str) -> str:
    if value not in FAILURE_POLICIES:
        raise typer.BadParameter(f"choose one of {', '.join(FAILURE_POLICIES)}")
    return value


def build_rewriter(
    backend: str,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    on_error: str = "shield",
    max_new_tokens: int = 512,
) -> Any:
    """A Rewriter from command-line style settings (shared by the CLI's commands)."""
    from .settings import RewriterSettings

    settings = RewriterSettings.from_mapping(
        {
            "backend": backend,
            "model": model,
            "base_url": base_url if backend == "openai" else None,
            "api_key": api_key if backend == "openai" else None,
            "on_error": on_error,
            "max_new_tokens": max_new_tokens,
        },
        where="command-line options",
    )
    return settings.build()


def print_result(result: RewriteResult, *, title: str = "vlmguard") -> None:
    """Show a result as rich panels: analysis, risk, the prompt for the VLM."""
    table = Table.grid(padding=(0, 2))
    table.add_row("[bold]risk[/]", f"[{_RISK_STYLE[result.risk_label]}]{result.risk_label}[/]")
    table.add_row("[bold]action[/]", result.action)
    table.add_row("[bold]latency[/]", f"{result.latency_ms:.0f} ms")
    table.add_row(
        "[bold]tokens[/]", f"{result.usage.prompt_tokens} in / {result.usage.completion_tokens} out"
    )
    if result.fallback:
        table.add_row("[bold red]fallback[/]", result.fallback)
    console.print(Panel(table, title=title, expand=False))
    console.print(Panel(result.original, title="user's text", border_style="dim"))
    if result.analysis:
        console.print(Panel(result.analysis, title="analysis", border_style="blue"))
    console.print(Panel(result.prompt, title="prompt for the VLM", border_style="green"))


@app.command()
def rewrite(
    text: Annotated[str, typer.Argument(help="The user's text prompt.")],
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="An image file (repeatable).")
    ] = None,
    backend: Annotated[str, typer.Option(help="transformers, openai, or an installed plugin.")] = (
        "transformers"
    ),
    model: Annotated[str, typer.Option(envvar="VLMGUARD_MODEL", help="Model id or folder.")] = (
        DEFAULT_MODEL
    ),
    base_url: Annotated[
        str | None, typer.Option(envvar="VLMGUARD_BASE_URL", help="For --backend openai.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="VLMGUARD_API_KEY")] = None,
    on_error: Annotated[
        str, typer.Option(callback=_policy, help="shield, raise, passthrough or block.")
    ] = "shield",
    max_new_tokens: Annotated[int, typer.Option(help="Generation limit.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Rewrite one prompt (with optional images) and show the analysis and the new prompt."""
    from .errors import VLMGuardError

    try:
        rewriter = build_rewriter(backend, model, base_url, api_key, on_error, max_new_tokens)
        with rewriter:
            result = rewriter.rewrite(text, images=[str(p) for p in image or []])
    except VLMGuardError as exc:
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(code=2) from exc
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print_result(result)


@app.command()
def demo(
    model: Annotated[str, typer.Option(envvar="VLMGUARD_MODEL", help="Model id or folder.")] = (
        DEFAULT_MODEL
    ),
    assets: Annotated[Path, typer.Option(help="Where to draw the example images.")] = Path(
        "examples/assets"
    ),
    max_new_tokens: Annotated[int, typer.Option(help="Generation limit.")] = 384,
) -> None:
    """Rewrite the example image + text pairs with a local model (the tiny one offline)."""
    from .demo import run_demo

    run_demo(model=model, assets=assets, max_new_tokens=max_new_tokens, console=console)


def _register_optional_commands() -> None:
    """Add ``serve``, ``train`` and ``bench`` from their packages when they are present."""
    for module_name in ("server.cli", "train.cli", "bench.cli"):
        try:
            module = import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as exc:
            # The part itself is absent, or its extra is not installed: no command then.
            if exc.name and (exc.name.startswith(f"{__package__}.") or exc.name != __package__):
                continue
            raise
        module.register(app)


_register_optional_commands()


def main() -> None:
    """Entry point of the ``vlmguard`` script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
