"""``vlmguard demo`` / ``make demo``: the rewriter on our example images, end to end.

Offline, without the model's weights, it runs the tiny random-weight model of
:mod:`vlmguard_plugins.tiny_model` (a production module: the demo never imports the
test doubles of :mod:`vlmguard_plugins.testing`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel

from .display import print_result
from .errors import ModelNotFoundError
from .examples_assets import EXAMPLE_PROMPTS, draw_example_images
from .rewriter import Rewriter
from .types import RewriteRequest

if TYPE_CHECKING:
    from .backends.transformers import TransformersBackend

__all__ = ["run_demo"]


def _load_backend(model: str, console: Console) -> tuple[TransformersBackend, bool]:
    """The backend for ``model``, or the tiny model when its weights are not available."""
    from .backends.transformers import TransformersBackend
    from .tiny_model import make_tiny_model

    try:
        return TransformersBackend(model), False
    except ModelNotFoundError as exc:
        console.print(
            Panel(
                f"{exc}\n\nRunning the TINY RANDOM-WEIGHT model instead. Its output is "
                "untrained noise: expect it not to follow the output contract, so what you "
                "see below is the failure policy (shield) at work, not a real rewrite.\n"
                "Set VLMGUARD_MODEL to a local model folder to see real rewrites.",
                title="[bold red]model weights not available offline[/]",
                border_style="red",
            )
        )
        return TransformersBackend(_tiny_model_folder(make_tiny_model)), True


def _tiny_model_folder(make: Callable[[Path], Path]) -> Path:
    """The demo's tiny model, built once; a build cut short is built again, never reused.

    The model is written to a private folder and moved into place whole, so an
    interrupted build (or a concurrent one) can never leave a half-written model behind.
    """
    folder = Path(tempfile.gettempdir()) / "vlmguard-tiny-model"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    staging = Path(tempfile.mkdtemp(prefix="vlmguard-tiny-model-"))
    make(staging)
    (staging / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:  # another process moved its complete copy in first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def run_demo(model: str, assets: Path, max_new_tokens: int, console: Console) -> None:
    """Draw the example images, rewrite each example prompt, print the results."""
    images = draw_example_images(assets)
    console.print(f"[bold]vlmguard demo[/]: example images drawn in {assets}/")
    backend, is_tiny = _load_backend(model, console)
    label = f"{backend.model_name}{' (tiny, random weights)' if is_tiny else ''}"
    console.print(f"rewriter model: [bold]{label}[/] on {backend.device}")
    rewriter = Rewriter(backend=backend, max_new_tokens=64 if is_tiny else max_new_tokens)
    with rewriter:
        results = rewriter.rewrite_batch(
            [_request(text, images[name]) for name, text in EXAMPLE_PROMPTS.items()]
        )
    for (name, _), result in zip(EXAMPLE_PROMPTS.items(), results, strict=True):
        print_result(result, title=f"{name}.png", console=console)
    fallbacks = sum(1 for r in results if r.fallback)
    console.print(
        f"[bold]{len(results)} prompts rewritten[/]: {fallbacks} by the failure policy, "
        f"{len(results) - fallbacks} by the model."
    )


def _request(text: str, image: Path) -> RewriteRequest:
    return RewriteRequest(text=text, images=[image])
