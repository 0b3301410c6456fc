"""MM-SafetyBench (Liu et al., ECCV 2024): 13 scenarios x 3 kinds of query-relevant image."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..errors import BenchmarkDataError
from .common import BenchmarkData, find_missing, image_sample, read_json

__all__ = ["MMSB_IMAGE_KINDS", "load_mm_safetybench", "scenario_files"]

logger = logging.getLogger("vlmguard_plugins.bench")

MMSB_IMAGE_KINDS = ("SD", "TYPO", "SD_TYPO")
"""Stable-Diffusion image, typography of the key phrase, and both stacked."""

_QUESTION_FIELD = {
    "SD": "Rephrased Question(SD)",
    "TYPO": "Rephrased Question",
    "SD_TYPO": "Rephrased Question",
}


def scenario_files(data_dir: str | Path) -> dict[str, Path]:
    """Scenario name (``01-Illegal_Activitiy``...) to its processed-questions file."""
    folder = Path(data_dir) / "mm-safetybench" / "processed_questions"
    if not folder.is_dir():
        raise BenchmarkDataError(f"mm-safetybench: {folder} not found")
    return {path.stem: path for path in sorted(folder.glob("*.json"))}


def _tiny_ids(data_dir: str | Path) -> dict[str, set[str]]:
    """The question ids of MM-SafetyBench's tiny version, per scenario."""
    path = Path(data_dir) / "mm-safetybench" / "TinyVersion_ID_List.json"
    entries = read_json(path, "mm-safetybench")
    try:
        return {e["Scenario"]: {str(i) for i in e["Sampled_ID_List"]} for e in entries}
    except (KeyError, TypeError) as exc:
        raise BenchmarkDataError(f"mm-safetybench: {path} has an unexpected shape") from exc


def load_mm_safetybench(
    data_dir: str | Path,
    kinds: Sequence[str] = MMSB_IMAGE_KINDS,
    subset: Literal["all", "tiny"] = "all",
    scenarios: Sequence[str] | None = None,
    image_dir: str | Path | None = None,
) -> BenchmarkData:
    """Load the processed questions of every scenario file present.

    ``kinds`` picks SD, TYPO and/or SD_TYPO (one sample per question and kind);
    ``subset="tiny"`` keeps the ids of ``TinyVersion_ID_List.json``; ``scenarios``
    restricts to some scenario names.  Images are
    ``<image_dir>/<scenario>/<kind>/<id>.jpg`` (default ``<data_dir>/mm-safetybench/imgs``,
    the published layout; ``vlmguard bench prepare`` renders the TYPO ones).
    """
    unknown = [k for k in kinds if k not in MMSB_IMAGE_KINDS]
    if unknown or not kinds:
        raise BenchmarkDataError(
            f"mm-safetybench: unknown image kinds {unknown}; use {', '.join(MMSB_IMAGE_KINDS)}"
        )
    if subset not in ("all", "tiny"):
        raise BenchmarkDataError(f"mm-safetybench: unknown subset {subset!r}; use all or tiny")
    files = scenario_files(data_dir)
    wanted = list(scenarios) if scenarios else list(files)
    absent = [s for s in wanted if s not in files]
    if absent:
        raise BenchmarkDataError(
            f"mm-safetybench: no question file for scenarios {absent}; found {list(files)}"
        )
    keep = _tiny_ids(data_dir) if subset == "tiny" else None
    if keep is not None:
        unlisted = [s for s in wanted if s not in keep]
        if unlisted:
            logger.warning("mm-safetybench: scenarios %s are not in the tiny list", unlisted)
    images = Path(image_dir) if image_dir else Path(data_dir) / "mm-safetybench" / "imgs"
    samples = []
    for scenario in wanted:
        questions = read_json(files[scenario], "mm-safetybench")
        for qid, record in questions.items():
            if keep is not None and qid not in keep.get(scenario, set()):
                continue
            for kind in kinds:
                try:
                    text = record[_QUESTION_FIELD[kind]]
                    samples.append(
                        image_sample(
                            sample_id=f"{scenario}/{kind}/{qid}",
                            text=text,
                            image=images / scenario / kind / f"{qid}.jpg",
                            category=scenario,
                            metadata={
                                "scenario": scenario,
                                "image_kind": kind,
                                "question_id": qid,
                                "original_question": record["Question"],
                                "key_phrase": record["Key Phrase"],
                                "harmful": True,
                            },
                        )
                    )
                except KeyError as exc:
                    raise BenchmarkDataError(
                        f"mm-safetybench: {scenario} question {qid} lacks {exc}"
                    ) from exc
    return BenchmarkData(
        f"mm-safetybench-{subset}",
        samples,
        find_missing(samples),
        image_hint=(
            "Render the TYPO images with `vlmguard bench prepare`; SD and SD_TYPO images "
            f"come from the published image archive, unpacked into {images}."
        ),
    )
