"""SIUO, Safe Inputs but Unsafe Output (Wang et al., NAACL 2025)."""

from __future__ import annotations

from pathlib import Path

from ..errors import BenchmarkDataError
from .common import BenchmarkData, find_missing, image_sample, read_json

__all__ = ["load_siuo"]


def load_siuo(data_dir: str | Path, image_dir: str | Path | None = None) -> BenchmarkData:
    """Load ``<data_dir>/siuo/siuo_gen.json`` (167 records in the full file).

    SIUO's images are distributed separately from its questions: put them in
    ``image_dir`` (default ``<data_dir>/siuo/images``).  Missing files are listed in
    the result, never dropped here.
    """
    folder = Path(data_dir) / "siuo"
    records = read_json(folder / "siuo_gen.json", "siuo")
    if not isinstance(records, list):
        raise BenchmarkDataError("siuo: siuo_gen.json must be a list of records")
    images = Path(image_dir) if image_dir else folder / "images"
    samples = []
    for record in records:
        try:
            samples.append(
                image_sample(
                    sample_id=str(record["question_id"]),
                    text=record["question"],
                    image=images / record["image"],
                    category=record["category"],
                    target=record.get("reference_answer", ""),
                    metadata={
                        "safety_warning": record["safety_warning"],
                        "reference_answer": record.get("reference_answer", ""),
                        "harmful": True,
                    },
                )
            )
        except (KeyError, TypeError) as exc:
            raise BenchmarkDataError(f"siuo: a record lacks {exc}: {record!r:.200}") from exc
    return BenchmarkData(
        "siuo",
        samples,
        find_missing(samples),
        image_hint=f"SIUO's images are distributed apart from its questions; put them in {images}.",
    )
