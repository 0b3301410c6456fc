"""MM-Vet (Yu et al., ICML 2024): integrated capabilities, the utility benchmark."""

from __future__ import annotations

from pathlib import Path

from ..errors import BenchmarkDataError
from .common import BenchmarkData, find_missing, image_sample, read_json

__all__ = ["load_mmvet"]


def load_mmvet(data_dir: str | Path, image_dir: str | Path | None = None) -> BenchmarkData:
    """Load ``<data_dir>/mm-vet/mm-vet.json`` (218 questions in the full file).

    Images are looked up in ``image_dir`` (default ``<data_dir>/mm-vet/images``).
    The target is the published answer (``a<AND>b``, ``a<OR>b``); the category is the
    first capability, and every capability is kept in the metadata.
    """
    folder = Path(data_dir) / "mm-vet"
    records = read_json(folder / "mm-vet.json", "mm-vet")
    if not isinstance(records, dict):
        raise BenchmarkDataError("mm-vet: mm-vet.json must map question ids to records")
    images = Path(image_dir) if image_dir else folder / "images"
    samples = []
    for key, record in records.items():
        try:
            capabilities = list(record["capability"])
            samples.append(
                image_sample(
                    sample_id=key,
                    text=record["question"],
                    image=images / record["imagename"],
                    category=capabilities[0] if capabilities else "",
                    target=record["answer"],
                    metadata={"capabilities": capabilities, "harmful": False},
                )
            )
        except (KeyError, TypeError) as exc:
            raise BenchmarkDataError(f"mm-vet: record {key!r} lacks {exc}") from exc
    return BenchmarkData("mmvet", samples, find_missing(samples))
