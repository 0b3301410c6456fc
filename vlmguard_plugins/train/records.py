"""Training data formats: the source records synthesis reads and the samples it writes.

Sources:

- **VLGuard train** (``vlguard``): a JSON list of ``{id, image, safe, harmful_category?,
  harmful_subcategory?, "instr-resp": [...]}``.  Unsafe images carry
  ``{instruction, response}``; safe images carry ``{safe_instruction, response}``
  (a benign request) and ``{unsafe_instruction, response}``.  The responses are the
  safe ones; the unsafe response is sampled from a target model.
- **generic JSONL** (``jsonl``): one object a line with ``image`` (or ``images``),
  ``instruction``, ``safe_response``, optional ``unsafe_response``, optional
  ``benign`` (default false) and optional ``id`` (default: the line number).

Image paths are relative to ``image_root`` (default: the source file's folder).

Output: a folder with ``metadata.jsonl`` and ``images/``, loadable with
``datasets.load_dataset("imagefolder", data_dir=folder)`` or
:func:`load_training_dataset`.  Each row has ``messages`` in the rewriter's chat
format (:func:`vlmguard_plugins.prompts.build_messages`) with the output contract
(:func:`vlmguard_plugins.parsing.format_output`) as the assistant turn, so training
sees exactly what inference sends.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, RewriteParseError
from ..parsing import format_output, parse_output
from ..prompts import build_messages, neutralise_tags
from ..types import Risk

__all__ = [
    "IMAGES_DIR",
    "METADATA_FILE",
    "SOURCE_FORMATS",
    "SourceFormat",
    "SourceSample",
    "TrainingDataError",
    "load_training_dataset",
    "prompt_messages",
    "read_metadata",
    "read_source",
    "select_benign",
    "training_messages",
    "with_unchanged_marker",
]

SourceFormat = Literal["vlguard", "jsonl"]
SOURCE_FORMATS: tuple[str, ...] = ("vlguard", "jsonl")
METADATA_FILE = "metadata.jsonl"
IMAGES_DIR = "images"


class TrainingDataError(InputError):
    """A training source file is missing, malformed, or has a record without a required field."""


@dataclass(frozen=True)
class SourceSample:
    """One (image, instruction, safe response, unsafe response) tuple to synthesise from.

    ``benign`` marks a harmless request: its target is the ``<unchanged/>`` marker.
    ``unsafe_response`` is None when it must be sampled from the target model.
    """

    id: str
    images: tuple[Path, ...]
    instruction: str
    safe_response: str
    unsafe_response: str | None = None
    benign: bool = False
    category: str | None = None
    source: str = "jsonl"


def read_source(
    path: str | Path, fmt: SourceFormat = "jsonl", image_root: str | Path | None = None
) -> list[SourceSample]:
    """Read a source file into samples, in file order, with unique, stable ids.

    Raises:
        TrainingDataError: the file is missing or not in the format, naming the record.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training source {str(path)!r} does not exist or is not a file")
    root = Path(image_root) if image_root is not None else path.parent
    if fmt == "vlguard":
        samples = _read_vlguard(path, root)
    elif fmt == "jsonl":
        samples = _read_jsonl(path, root)
    else:
        raise TrainingDataError(
            f"unknown source format {fmt!r}; choose {' or '.join(SOURCE_FORMATS)}"
        )
    return _unique_ids(samples)


def _unique_ids(samples: list[SourceSample]) -> list[SourceSample]:
    # A repeated id would make resuming skip a different sample; suffixing in file order
    # keeps ids stable across runs.
    seen: dict[str, int] = {}
    unique = []
    for sample in samples:
        count = seen.get(sample.id, 0)
        seen[sample.id] = count + 1
        if count:
            sample = SourceSample(**{**sample.__dict__, "id": f"{sample.id}#{count + 1}"})
        unique.append(sample)
    return unique


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TrainingDataError(f"{where}: {name!r} must be a non-empty string")
    return value


def _read_vlguard(path: Path, root: Path) -> list[SourceSample]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingDataError(f"{path}: not a VLGuard JSON file: {exc}") from exc
    if not isinstance(records, list):
        raise TrainingDataError(f"{path}: a VLGuard file is a JSON list of records")
    samples = []
    for number, record in enumerate(records):
        where = f"{path} record {number}"
        if not isinstance(record, dict) or "instr-resp" not in record:
            raise TrainingDataError(f"{where}: expected an object with 'instr-resp'")
        record_id = str(record.get("id", number))
        image = root / _text(record.get("image"), where, "image")
        category = "/".join(
            str(record[key])
            for key in ("harmful_category", "harmful_subcategory")
            if record.get(key)
        )
        for index, pair in enumerate(record["instr-resp"]):
            pair_where = f"{where} instr-resp {index}"
            if not isinstance(pair, dict):
                raise TrainingDataError(f"{pair_where}: expected an object")
            response = _text(pair.get("response"), pair_where, "response")
            if "safe_instruction" in pair:
                instruction, benign = pair["safe_instruction"], True
            elif "unsafe_instruction" in pair:
                instruction, benign = pair["unsafe_instruction"], False
            elif "instruction" in pair:
                instruction, benign = pair["instruction"], False
            else:
                raise TrainingDataError(
                    f"{pair_where}: needs 'instruction', 'safe_instruction' or 'unsafe_instruction'"
                )
            samples.append(
                SourceSample(
                    id=f"{record_id}/{index}",
                    images=(image,),
                    instruction=_text(instruction, pair_where, "instruction"),
                    safe_response=response,
                    benign=benign,
                    category=category or None,
                    source="vlguard",
                )
            )
    return samples


def _read_jsonl(path: Path, root: Path) -> list[SourceSample]:
    samples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainingDataError(f"{where}: invalid JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise TrainingDataError(f"{where}: expected a JSON object")
            images = record.get("images", record.get("image"))
            if isinstance(images, str):
                images = [images]
            if not isinstance(images, list) or not images:
                raise TrainingDataError(f"{where}: needs 'image' (a path) or 'images' (a list)")
            unsafe = record.get("unsafe_response")
            samples.append(
                SourceSample(
                    id=str(record.get("id", f"line{number}")),
                    images=tuple(root / _text(image, where, "image") for image in images),
                    instruction=_text(record.get("instruction"), where, "instruction"),
                    safe_response=_text(record.get("safe_response"), where, "safe_response"),
                    unsafe_response=unsafe if isinstance(unsafe, str) and unsafe.strip() else None,
                    benign=bool(record.get("benign", False)),
                    category=record.get("category"),
                    source="jsonl",
                )
            )
    return samples


def select_benign(samples: list[SourceSample], max_fraction: float | None) -> list[SourceSample]:
    """Keep every harmful sample and at most ``max_fraction`` of the result benign.

    The benign ones kept are chosen by a hash of their id, so the choice is the same
    on every run (which resuming relies on).  ``None`` keeps everything.
    """
    if max_fraction is None:
        return list(samples)
    if not 0.0 <= max_fraction <= 1.0:
        raise TrainingDataError(f"max_benign_fraction must be in [0, 1], not {max_fraction}")
    harmful = sum(1 for s in samples if not s.benign)
    benign = [s for s in samples if s.benign]
    if max_fraction >= 1.0 or not benign:
        return list(samples)
    allowed = math.floor(max_fraction / (1.0 - max_fraction) * harmful + 1e-9)
    kept = {s.id for s in sorted(benign, key=lambda s: zlib.crc32(s.id.encode()))[:allowed]}
    return [s for s in samples if not s.benign or s.id in kept]


# --- the rewriter's chat format ---------------------------------------------------


class _ImageSlot:
    """Stands in for an image while the messages are built, then becomes a placeholder."""


def prompt_messages(text: str, num_images: int) -> list[dict[str, Any]]:
    """The rewriter's prompt for ``text`` with ``num_images`` image placeholders.

    The same messages :func:`vlmguard_plugins.prompts.build_messages` gives the model at
    inference, with ``{"type": "image"}`` where the images go (TRL fills them from the
    ``images`` column).
    """
    messages = build_messages(text, [_ImageSlot() for _ in range(num_images)])  # type: ignore[misc]
    return [
        {
            "role": message["role"],
            "content": [
                {"type": "image"}
                if part.get("type") == "image"
                else {"type": "text", "text": part["text"]}
                for part in message["content"]
            ],
        }
        for message in messages
    ]


def training_messages(
    text: str, num_images: int, analysis: str, risk: Risk, rewrite: str | None
) -> list[dict[str, Any]]:
    """The full training conversation: the rewriter's prompt and the output contract.

    ``rewrite=None`` makes the target the ``<unchanged/>`` marker, the answer for a
    request whose text goes on as it is.
    """
    target = format_output(analysis, risk, rewrite)
    return [
        *prompt_messages(text, num_images),
        {"role": "assistant", "content": [{"type": "text", "text": target}]},
    ]


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def with_unchanged_marker(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """``messages`` with an assistant target that copies ``instruction`` made the marker.

    Datasets synthesised before the ``<unchanged/>`` marker existed answer a benign
    request with a copy of its text; training on them as they are would teach the
    model to spend a token per token of the request. Any other target (a rewrite, a
    medium or high risk, one that does not parse) is returned as it is.
    """
    if not messages or messages[-1].get("role") != "assistant":
        return messages
    parts = messages[-1]["content"]
    text = parts if isinstance(parts, str) else "".join(p.get("text") or "" for p in parts)
    try:
        parsed = parse_output(text)
    except RewriteParseError:
        return messages
    if parsed.rewrite is None or parsed.risk is None or parsed.risk >= Risk.MEDIUM:
        return messages
    if not (
        _same_text(parsed.rewrite, instruction)
        or _same_text(parsed.rewrite, neutralise_tags(instruction))
    ):
        return messages
    target = format_output(parsed.analysis, parsed.risk, None)
    return [
        *messages[:-1],
        {"role": "assistant", "content": [{"type": "text", "text": target}]},
    ]


def read_metadata(folder: str | Path) -> list[dict[str, Any]]:
    """The rows of a synthesised dataset's ``metadata.jsonl`` (complete lines only)."""
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interruption; resume rewrites it
                continue
    return rows


def load_training_dataset(folder: str | Path) -> Any:
    """Load a synthesised folder as a ``datasets.Dataset`` with decoded ``images``.

    Columns: ``id``, ``images`` (a list of images), ``messages``, ``instruction``,
    ``benign``, ``risk``, ``rewrite``, ``source``, ``category``.

    Raises:
        TrainingDataError: the folder has no ``metadata.jsonl`` or it is empty.
    """
    from datasets import Image, List, load_dataset  # type: ignore[import-untyped]

    folder = Path(folder)
    metadata = folder / METADATA_FILE
    if not metadata.is_file() or not read_metadata(folder):
        raise TrainingDataError(
            f"{str(folder)!r} holds no training samples ({METADATA_FILE} missing or empty); "
            "create it with `vlmguard train synth`"
        )
    dataset = load_dataset("json", data_files=str(metadata), split="train")
    base = str(folder.resolve())

    def absolute(row: dict[str, Any]) -> dict[str, Any]:
        return {"images": [f"{base}/{name}" for name in row["file_names"]]}

    dataset = dataset.map(absolute, remove_columns=["file_names"])
    return dataset.cast_column("images", List(Image()))
