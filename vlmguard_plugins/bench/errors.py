"""Errors of the benchmark harness (part of the :class:`~vlmguard_plugins.VLMGuardError` tree)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigurationError

__all__ = ["BenchmarkDataError", "JudgeError", "MissingImagesError"]


class BenchmarkDataError(ConfigurationError):
    """A benchmark's files are missing or do not have the published format."""


class MissingImagesError(BenchmarkDataError):
    """Some records of a benchmark point at image files that are not there.

    ``missing`` lists every missing path; the message names how many and the first few.
    """

    def __init__(self, benchmark: str, missing: Sequence[str], total: int, hint: str = "") -> None:
        self.benchmark = benchmark
        self.missing = list(missing)
        self.total = total
        shown = ", ".join(self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        message = (
            f"{benchmark}: {len(self.missing)} of {total} records have no image file "
            f"({shown}{more}).{(' ' + hint) if hint else ''} "
            "Pass missing_images='skip' (--skip-missing-images) to run without those records."
        )
        super().__init__(message)


class JudgeError(ConfigurationError):
    """A judge needs a model that was not configured."""
