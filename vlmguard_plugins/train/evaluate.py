"""How often a rewriter model's greedy output follows the output contract.

The check that training worked at all: load the model as inference does
(``load_backend("transformers", model=...)`` behind a :class:`~vlmguard_plugins.Rewriter`),
rewrite the dataset's prompts, and count the outputs that parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rewriter import Rewriter
from ..types import RewriteRequest
from .records import read_metadata

__all__ = ["ContractReport", "contract_rate"]


@dataclass
class ContractReport:
    """Outputs that followed the contract, out of how many, and the raw failures."""

    followed: int
    total: int
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.followed / self.total if self.total else 0.0


def contract_rate(
    model: str | Path,
    dataset_dir: str | Path,
    *,
    limit: int | None = None,
    max_new_tokens: int = 256,
    backend_kwargs: dict[str, Any] | None = None,
) -> ContractReport:
    """Rewrite the prompts of a synthesised dataset with ``model`` and count parsed outputs."""
    from ..backends import load_backend

    folder = Path(dataset_dir)
    rows = read_metadata(folder)[:limit]
    requests = [
        RewriteRequest(
            text=row["instruction"], images=[str(folder / name) for name in row["file_names"]]
        )
        for row in rows
    ]
    backend = load_backend("transformers", model=str(model), **(backend_kwargs or {}))
    with Rewriter(backend=backend, cache_size=0, max_new_tokens=max_new_tokens) as rewriter:
        results = rewriter.rewrite_batch(requests)
    failures = [r.raw or "" for r in results if r.fallback is not None]
    return ContractReport(
        followed=len(results) - len(failures), total=len(results), failures=failures
    )
