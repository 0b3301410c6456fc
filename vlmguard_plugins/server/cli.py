"""``vlmguard serve``: run the guard gateway in front of an OpenAI-compatible VLM server."""

from __future__ import annotations

from typing import Annotated

import typer

_ENV = "VLMGUARD_GATEWAY_"


def _env(name: str) -> str:
    return f"(env {_ENV}{name})"


def serve(
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            help=f"VLM server base URL, e.g. http://localhost:8000/v1 {_env('UPSTREAM_URL')}",
        ),
    ] = None,
    upstream_api_key: Annotated[
        str | None,
        typer.Option(
            help=f"Key for the upstream; prefer the variable {_env('UPSTREAM_API_KEY')}",
            show_default=False,
        ),
    ] = None,
    rewriter_backend: Annotated[
        str | None,
        typer.Option(help=f"transformers, openai or a plugin {_env('REWRITER_BACKEND')}"),
    ] = None,
    rewriter_model: Annotated[
        str | None, typer.Option(help=f"Rewriter model id or folder {_env('REWRITER_MODEL')}")
    ] = None,
    rewriter_base_url: Annotated[
        str | None,
        typer.Option(
            help=f"Rewriter server for --rewriter-backend openai {_env('REWRITER_BASE_URL')}"
        ),
    ] = None,
    rewriter_api_key: Annotated[
        str | None, typer.Option(help=f"Key for the rewriter server {_env('REWRITER_API_KEY')}")
    ] = None,
    on_error: Annotated[
        str | None,
        typer.Option(help=f"Failure policy: shield, raise, passthrough, block {_env('ON_ERROR')}"),
    ] = None,
    unsupported_content: Annotated[
        str | None,
        typer.Option(
            help="A message part the guard cannot check (audio, video, a file): refuse the "
            f"request (default) or drop the part {_env('UNSUPPORTED_CONTENT')}"
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help=f"Address to listen on (default 127.0.0.1) {_env('HOST')}")
    ] = None,
    port: Annotated[int | None, typer.Option(help=f"Port (default 8080) {_env('PORT')}")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="A key clients must send (repeatable); without any, only 127.0.0.1 is allowed "
            f"{_env('CLIENT_API_KEYS')} (comma-separated)",
            show_default=False,
        ),
    ] = None,
    expose_analysis: Annotated[
        bool | None,
        typer.Option(
            "--expose-analysis/--hide-analysis",
            help=f"Add risk and analysis to responses (default: hidden) {_env('EXPOSE_ANALYSIS')}",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="enforce (default): guard, then forward the guarded request; shadow: forward "
            "the original at once and only record what the guard would do; speculative: call "
            "the upstream while guarding, release its answer only if the guard changes nothing "
            f"{_env('MODE')}"
        ),
    ] = None,
    audit_log: Annotated[
        str | None,
        typer.Option(
            help="Append a JSON line per guard decision to this file ('-': standard output) "
            f"{_env('AUDIT_LOG')}"
        ),
    ] = None,
    audit_include_text: Annotated[
        bool | None,
        typer.Option(
            "--audit-include-text/--audit-without-text",
            help="Also write the user's text, the rewrite and the analysis to the audit log "
            f"(default: without) {_env('AUDIT_INCLUDE_TEXT')}",
        ),
    ] = None,
    capture_message_content: Annotated[
        bool | None,
        typer.Option(
            "--capture-message-content/--no-capture-message-content",
            help="Record the user's text, the rewrite and the analysis on each rewrite's "
            "OpenTelemetry span (default: follow OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_"
            f"CONTENT, off unless set) {_env('CAPTURE_MESSAGE_CONTENT')}",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help=f"An origin allowed by CORS (repeatable; off by default) {_env('CORS_ORIGINS')}"
        ),
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(help=f"Largest request body {_env('MAX_BODY_BYTES')}")
    ] = None,
    allow_remote_images: Annotated[
        bool | None,
        typer.Option(
            "--allow-remote-images/--no-remote-images",
            help=f"Let the guard fetch http(s) image URLs {_env('ALLOW_REMOTE_IMAGES')}",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Gateway processes sharing the port, each with its own rewriter (default 1) "
            f"{_env('WORKERS')}",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the OpenAI-compatible guard gateway: every chat request is rewritten first."""
    from rich.console import Console

    from ..errors import ConfigurationError

    err_console = Console(stderr=True, soft_wrap=True)
    try:
        from .app import serve as run_gateway
        from .config import GatewaySettings

        settings = GatewaySettings.load(
            upstream_url=upstream,
            upstream_api_key=upstream_api_key,
            rewriter_backend=rewriter_backend,
            rewriter_model=rewriter_model,
            rewriter_base_url=rewriter_base_url,
            rewriter_api_key=rewriter_api_key,
            on_error=on_error,
            unsupported_content=unsupported_content,
            host=host,
            port=port,
            client_api_keys=api_key or None,
            expose_analysis=expose_analysis,
            mode=mode,
            audit_log=audit_log,
            audit_include_text=audit_include_text,
            capture_message_content=capture_message_content,
            cors_origins=cors_origin or None,
            max_body_bytes=max_body_bytes,
            allow_remote_images=allow_remote_images,
            workers=workers,
        )
        rewriter = settings.rewriter_settings()
        model = rewriter.backend_kwargs().get("model", "")
        err_console.print(
            f"[bold]vlmguard gateway[/] on http://{settings.host}:{settings.port}/v1 -> "
            f"{settings.upstream_url} (mode: {settings.mode}, rewriter: {rewriter.backend} "
            f"{model}, on error: "
            f"{settings.on_error}, unsupported content: {settings.unsupported_content}, "
            f"client keys: {len(settings.client_api_keys)}, workers: {settings.workers}, "
            f"audit log: {settings.audit_log or 'off'})"
        )
        run_gateway(settings, log_level=log_level)
    except ModuleNotFoundError as exc:
        err_console.print(
            f"[bold red]error:[/] the gateway needs its extra: pip install "
            f"'vlmguard-plugins[server]' ({exc.name} is missing)"
        )
        raise typer.Exit(code=2) from exc
    except ConfigurationError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the ``vlmguard`` application."""
    app.command(name="serve")(serve)


__all__ = ["register", "serve"]
