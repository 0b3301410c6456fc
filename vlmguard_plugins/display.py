"""How the command line shows a :class:`~vlmguard_plugins.RewriteResult`: rich panels."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from .types import RewriteResult

__all__ = ["RISK_STYLE", "print_result"]

#: The rich style of each risk label.
RISK_STYLE = {
    "none": "green",
    "low": "cyan",
    "medium": "yellow",
    "high": "bold red",
    "unknown": "magenta",
}

# Bound to whatever sys.stdout is when printing, so a captured stdout sees the output.
_stdout = Console()


def print_result(
    result: RewriteResult, *, title: str = "vlmguard", console: Console | None = None
) -> None:
    """Show a result as rich panels: risk and action, the user's text, analysis, the prompt."""
    out = console or _stdout
    table = Table.grid(padding=(0, 2))
    table.add_row("[bold]risk[/]", f"[{RISK_STYLE[result.risk_label]}]{result.risk_label}[/]")
    table.add_row("[bold]action[/]", result.action)
    table.add_row("[bold]latency[/]", f"{result.latency_ms:.0f} ms")
    table.add_row(
        "[bold]tokens[/]", f"{result.usage.prompt_tokens} in / {result.usage.completion_tokens} out"
    )
    if result.fallback:
        table.add_row("[bold red]fallback[/]", result.fallback)
    out.print(Panel(table, title=title, expand=False))
    out.print(Panel(result.original, title="user's text", border_style="dim"))
    if result.analysis:
        out.print(Panel(result.analysis, title="analysis", border_style="blue"))
    out.print(Panel(result.prompt, title="prompt for the VLM", border_style="green"))
