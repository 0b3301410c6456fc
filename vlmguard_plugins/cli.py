"""The ``vlmguard`` command line.

``vlmguard rewrite``, ``vlmguard demo`` and ``vlmguard --version`` live here; the
gateway (``serve``), training (``train``) and benchmark (``bench``) commands are
registered from their own packages when those are present.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .display import print_result
from .policy import FAILURE_POLICIES

__all__ = [
    "DEFAULT_MODEL",
    "EXIT_ERROR",
    "EXIT_FALLBACK",
    "EXIT_OK",
    "app",
    "build_rewriter",
    "install_hint",
    "main",
]

app = typer.Typer(
    name="vlmguard",
    help="Guard a vision-language model by rewriting risky image + text prompts.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"

#: Exit codes of ``vlmguard rewrite`` (and the install hints of every command).
EXIT_OK = 0  # the prompt was rewritten, or judged safe and kept unchanged
EXIT_ERROR = 2  # bad input (a missing or unreadable image), bad settings, a raised error
EXIT_FALLBACK = 3  # a failure policy (shield, passthrough, block) produced the prompt

_FALLBACK_ACTIONS = frozenset({"shield", "passthrough", "block"})

#: Which extra brings which top-level module, for the install hints.
_EXTRA_OF_MODULE = {
    "torch": "local",
    "torchvision": "local",
    "transformers": "local",
    "accelerate": "local",
    "openai": "remote",
    "fastapi": "server",
    "uvicorn": "server",
    "uvloop": "server",
    "httptools": "server",
    "prometheus_client": "server",
    "pydantic_settings": "server",
    "trl": "train",
    "peft": "train",
    "datasets": "train",
    "yaml": "train",
    "inspect_ai": "bench",
    "matplotlib": "bench",
    "pandas": "bench",
}

#: The optional command groups: module, command name, extra, modules the extra brings.
_OPTIONAL_COMMANDS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("server.cli", "serve", "server", ("fastapi", "uvicorn", "pydantic_settings", "openai")),
    ("train.cli", "train", "train", ("trl", "peft", "datasets", "yaml", "torch", "transformers")),
    ("bench.cli", "bench", "bench", ("inspect_ai", "matplotlib", "pandas", "torch", "openai")),
)


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (plain text: escape it before rich prints it)."""
    return f"pip install 'vlmguard-plugins[{extra}]'"


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
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    on_error: str = "shield",
    max_new_tokens: int = 512,
) -> Any:
    """A Rewriter from command-line style settings (shared by the CLI's commands).

    ``model`` None leaves the choice to the backend: the default rewriter model for
    ``transformers``; a backend without a model (``scripted``) is given none.
    """
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


@app.command()
def rewrite(
    text: Annotated[str, typer.Argument(help="The user's text prompt.")],
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="An image file (repeatable).")
    ] = None,
    backend: Annotated[str, typer.Option(help="transformers, openai, or an installed plugin.")] = (
        "transformers"
    ),
    model: Annotated[
        str | None,
        typer.Option(
            envvar="VLMGUARD_MODEL",
            help=f"Model id or folder (transformers: {DEFAULT_MODEL} when not given; "
            "openai: the served model name, required).",
            show_default=False,
        ),
    ] = None,
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
    """Rewrite one prompt (with optional images) and show the analysis and the new prompt.

    \b
    Exit codes:
      0  the prompt was rewritten (or judged safe and kept unchanged)
      2  an error: a missing or unreadable image, a bad setting, a model that
         cannot be loaded, or a failure with --on-error raise
      3  the rewrite failed and the failure policy (shield, passthrough, block)
         produced the prompt; the result is still printed (--json included)
    """
    from .errors import VLMGuardError
    from .images import load_images

    try:
        # Read and check the images before loading a model: a missing or unreadable
        # file is the user's mistake to fix, never a case for the failure policy.
        images = load_images([str(p) for p in image or []])
        rewriter = build_rewriter(backend, model, base_url, api_key, on_error, max_new_tokens)
        with rewriter:
            result = rewriter.rewrite(text, images=images)
    except VLMGuardError as exc:
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(code=EXIT_ERROR) from exc
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print_result(result, console=console)
    if result.action in _FALLBACK_ACTIONS:
        err_console.print(
            f"[bold yellow]fallback:[/] the {result.action} policy produced the prompt "
            f"({escape(result.fallback or 'no reason given')})"
        )
        raise typer.Exit(code=EXIT_FALLBACK)


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


def _missing_module(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that is not installed (looked up, not imported)."""
    for name in modules:
        try:
            if find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def _needs_extra(command: str, extra: str, missing: str) -> None:
    """Add a hidden ``command`` that says which extra to install, and exits."""

    def _hint(ctx: typer.Context) -> None:
        err_console.print(
            f"[bold red]error:[/] `vlmguard {command}` needs the {extra} extra "
            f"({missing} is not installed): {escape(install_hint(extra))}"
        )
        raise typer.Exit(code=EXIT_ERROR)

    app.command(
        name=command,
        hidden=True,
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(_hint)


def _register_optional_commands() -> None:
    """Add ``serve``, ``train`` and ``bench`` when their extras are installed.

    Without its extra a command is left out of ``vlmguard --help``; running it says
    which extra to install.
    """
    for module_name, command, extra, modules in _OPTIONAL_COMMANDS:
        missing = _missing_module(modules)
        if missing is not None:
            _needs_extra(command, extra, missing)
            continue
        try:
            module = import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == __package__:
                raise
            _needs_extra(command, _EXTRA_OF_MODULE.get(exc.name.split(".")[0], extra), exc.name)
            continue
        module.register(app)


_register_optional_commands()


def main() -> None:
    """Entry point of the ``vlmguard`` script."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except ModuleNotFoundError as exc:
        # An optional package a command imports lazily: name the extra, no traceback.
        extra = _EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        err_console.print(
            f"[bold red]error:[/] {escape(exc.name or '')} is not installed: "
            f"{escape(install_hint(extra))}"
        )
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
