"""What every loader shares: the loaded data and the missing-image policy."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inspect_ai.dataset import Sample
from inspect_ai.model import ChatMessageUser, ContentImage, ContentText

from ..errors import BenchmarkDataError, MissingImagesError

__all__ = [
    "BenchmarkData",
    "MissingImagesPolicy",
    "find_missing",
    "image_sample",
    "read_json",
    "require_images",
]

logger = logging.getLogger("vlmguard_plugins.bench")

MissingImagesPolicy = Literal["error", "skip"]
"""What :func:`require_images` does with records whose image file is missing."""


@dataclass
class BenchmarkData:
    """The records of one benchmark (or one of its subsets), ready for inspect.

    ``missing_images`` holds the image path of every record whose file is absent;
    those records are still in ``samples`` until :func:`require_images` decides.
    """

    name: str
    samples: list[Sample]
    missing_images: list[str] = field(default_factory=list)
    image_hint: str = ""

    @property
    def categories(self) -> list[str]:
        """The categories present, in first-seen order."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.setdefault(str((sample.metadata or {}).get("category", "")), None)
        return list(seen)


def require_images(data: BenchmarkData, policy: MissingImagesPolicy = "error") -> list[Sample]:
    """The samples to run, applying ``policy`` to records whose image file is missing.

    ``error`` raises :class:`MissingImagesError` naming the files and how many;
    ``skip`` drops those records with a warning that says the same.  Nothing is
    dropped silently.
    """
    if not data.missing_images:
        return data.samples
    error = MissingImagesError(
        data.name, data.missing_images, len(data.samples), hint=data.image_hint
    )
    if policy == "error":
        raise error
    if policy != "skip":
        raise BenchmarkDataError(f"unknown missing-images policy {policy!r}; use error or skip")
    missing = set(data.missing_images)
    kept = [s for s in data.samples if (s.metadata or {}).get("image_path") not in missing]
    if not kept:
        raise BenchmarkDataError(
            f"{data.name}: none of its {len(data.samples)} records has an image file, so "
            f"nothing is left to run ({', '.join(data.missing_images[:5])} ...)."
            + (f" {data.image_hint}" if data.image_hint else "")
        )
    logger.warning(
        "%s: skipping %d of %d records whose image is missing (%s)",
        data.name,
        len(data.samples) - len(kept),
        len(data.samples),
        ", ".join(data.missing_images[:5]) + (" ..." if len(missing) > 5 else ""),
    )
    return kept


def read_json(path: Path, benchmark: str) -> Any:
    """Parse a benchmark's JSON file, with an error that names the file."""
    if not path.is_file():
        raise BenchmarkDataError(f"{benchmark}: {path} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(f"{benchmark}: {path} is not valid JSON ({exc})") from exc


def image_sample(
    *,
    sample_id: str,
    text: str,
    image: Path,
    category: str,
    target: str = "",
    metadata: dict[str, Any] | None = None,
) -> Sample:
    """One image + text user turn, the shape every benchmark here uses."""
    return Sample(
        id=sample_id,
        input=[ChatMessageUser(content=[ContentImage(image=str(image)), ContentText(text=text)])],
        target=target,
        metadata={
            "category": category,
            "question": text,
            "image_path": str(image),
            **(metadata or {}),
        },
    )


def find_missing(samples: list[Sample]) -> list[str]:
    """Image paths (from sample metadata) that are not files."""
    missing: dict[str, None] = {}
    for sample in samples:
        path = (sample.metadata or {}).get("image_path")
        if path and not Path(path).is_file():
            missing.setdefault(path, None)
    return list(missing)
