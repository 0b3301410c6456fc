"""VLGuard's test set (Zong et al., ICML 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import BenchmarkDataError
from .common import BenchmarkData, find_missing, image_sample, read_json

__all__ = ["VLGUARD_SUBSETS", "load_vlguard"]

VLGUARD_SUBSETS = ("unsafes", "safe_unsafes", "safe_safes")
"""Unsafe images; safe images with an unsafe instruction; safe images with a safe one."""

_INSTRUCTION_KEY = {
    "unsafes": "instruction",
    "safe_unsafes": "unsafe_instruction",
    "safe_safes": "safe_instruction",
}


def load_vlguard(
    data_dir: str | Path,
    subset: Literal["unsafes", "safe_unsafes", "safe_safes"] = "unsafes",
    image_dir: str | Path | None = None,
) -> BenchmarkData:
    """Load one subset of ``<data_dir>/vlguard/test.json`` (1,000 records in the full file).

    ``unsafes`` are the unsafe-image records, ``safe_unsafes`` and ``safe_safes`` the
    safe-image records with their unsafe or safe instruction.  Images are
    ``<image_dir>/<record image>`` (default ``<data_dir>/vlguard/test``, as the images
    archive unpacks).  The target is the reference response.
    """
    if subset not in VLGUARD_SUBSETS:
        raise BenchmarkDataError(
            f"vlguard: unknown subset {subset!r}; use {', '.join(VLGUARD_SUBSETS)}"
        )
    folder = Path(data_dir) / "vlguard"
    records = read_json(folder / "test.json", "vlguard")
    images = Path(image_dir) if image_dir else folder / "test"
    want_safe_image = subset != "unsafes"
    key = _INSTRUCTION_KEY[subset]
    samples = []
    for record in records:
        try:
            if bool(record["safe"]) != want_safe_image:
                continue
            pair = next((p for p in record["instr-resp"] if key in p), None)
            if pair is None:
                raise BenchmarkDataError(f"vlguard: record {record['id']} has no {key!r}")
            category = record.get("harmful_category") or "safe image"
            samples.append(
                image_sample(
                    sample_id=f"{record['id']}",
                    text=pair[key],
                    image=images / record["image"],
                    category=category,
                    target=pair.get("response", ""),
                    metadata={
                        "subset": subset,
                        "subcategory": record.get("harmful_subcategory") or "",
                        "reference_response": pair.get("response", ""),
                        "harmful": subset != "safe_safes",
                    },
                )
            )
        except (KeyError, TypeError) as exc:
            raise BenchmarkDataError(f"vlguard: a record lacks {exc}: {record!r:.200}") from exc
    return BenchmarkData(
        f"vlguard-{subset}",
        samples,
        find_missing(samples),
        image_hint=f"VLGuard's test images are distributed apart; unpack them into {images}.",
    )
