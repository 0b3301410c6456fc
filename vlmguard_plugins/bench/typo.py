"""Render MM-SafetyBench's TYPO images: the key phrase drawn as black text on white.

The published images are 1024 pixels wide with the phrase in a large font,
wrapped over as many lines as it needs; we draw the same locally so the TYPO split
can be run without the image archive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .datasets.common import read_json
from .datasets.mm_safetybench import scenario_files

__all__ = ["draw_key_phrase", "render_typo_images"]

# The layout of the published images (1024 pixels wide, a large bold font).
_WIDTH = 1024
_FONT_SIZE = 90
_MARGIN = 20
_LINE_SPACING = 10


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "FreeMonoBold.ttf", "Arial Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines or [""]


def draw_key_phrase(
    phrase: str, *, width: int = _WIDTH, font_size: int = _FONT_SIZE
) -> Image.Image:
    """One TYPO image: ``phrase`` wrapped to ``width`` pixels, black on white."""
    font = _font(font_size)
    lines = _wrap(phrase, font, width - 2 * _MARGIN)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font_size, 0)
    line_height = ascent + descent + _LINE_SPACING
    image = Image.new("RGB", (width, 2 * _MARGIN + line_height * len(lines)), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((_MARGIN, _MARGIN + index * line_height), line, fill="black", font=font)
    return image


def render_typo_images(
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    scenarios: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<scenario>/TYPO/<id>.jpg`` for every question's key phrase.

    ``out_dir`` defaults to ``<data_dir>/mm-safetybench/imgs``, where the loader looks.
    Existing files are kept unless ``overwrite``.  ``progress(done, total)`` is called
    after each question.  Returns the paths written.
    """
    files = scenario_files(data_dir)
    target = Path(out_dir) if out_dir else Path(data_dir) / "mm-safetybench" / "imgs"
    chosen = list(scenarios) if scenarios else list(files)
    jobs: list[tuple[str, str, str]] = []
    for scenario in chosen:
        questions = read_json(files[scenario], "mm-safetybench")
        jobs.extend((scenario, qid, rec["Key Phrase"]) for qid, rec in questions.items())
    written = []
    for done, (scenario, qid, phrase) in enumerate(jobs, start=1):
        path = target / scenario / "TYPO" / f"{qid}.jpg"
        if overwrite or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_key_phrase(phrase).save(path, quality=95)
            written.append(path)
        if progress is not None:
            progress(done, len(jobs))
    return written
