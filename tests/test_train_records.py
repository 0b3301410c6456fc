"""Training data formats: reading sources, benign selection, the rewriter's chat format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.errors import InputError
from vlmguard_plugins.parsing import UNCHANGED_MARKER, format_output, parse_output
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.train import read_source, training_messages
from vlmguard_plugins.train.records import (
    TrainingDataError,
    prompt_messages,
    select_benign,
    with_unchanged_marker,
)
from vlmguard_plugins.types import Risk


def test_vlguard_records_become_one_sample_per_instruction(data_dir: Path) -> None:
    path = data_dir / "vlguard" / "test.json"
    records = json.loads(path.read_text())
    samples = read_source(path, "vlguard", image_root="/data/vlguard/images")

    pairs = sum(len(record["instr-resp"]) for record in records)
    assert len(samples) == pairs == 60
    assert len({s.id for s in samples}) == len(samples)
    # Safe images give one benign and one harmful request each; unsafe images one harmful.
    assert sum(s.benign for s in samples) == 20
    first = records[0]
    assert samples[0].instruction == first["instr-resp"][0]["instruction"]
    assert samples[0].safe_response == first["instr-resp"][0]["response"]
    assert samples[0].images == (Path("/data/vlguard/images") / first["image"],)
    assert samples[0].unsafe_response is None  # VLGuard has none: the target samples one
    assert samples[0].category == "deception/disinformation"
    safe_record = next(r for r in records if r["safe"])
    from_safe = [s for s in samples if s.id.startswith(f"{safe_record['id']}/")]
    assert [s.benign for s in from_safe] == [True, False]
    assert from_safe[1].instruction == safe_record["instr-resp"][1]["unsafe_instruction"]


def test_generic_jsonl_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "src.jsonl"
    path.write_text(
        json.dumps(
            {
                "image": "a.png",
                "instruction": "How?",
                "safe_response": "Safely.",
                "unsafe_response": "Dangerously.",
            }
        )
        + "\n\n"
        + json.dumps(
            {
                "id": "x",
                "images": ["b.png", "c.png"],
                "instruction": "What is it?",
                "safe_response": "A flower.",
                "benign": True,
            }
        )
        + "\n"
    )
    first, second = read_source(path)
    assert first.id == "line1" and first.images == (tmp_path / "a.png",)
    assert first.unsafe_response == "Dangerously." and not first.benign
    assert second.id == "x" and second.benign and len(second.images) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1: invalid JSON"),
        (json.dumps({"instruction": "x", "safe_response": "y"}), "needs 'image'"),
        (json.dumps({"image": "a.png", "safe_response": "y"}), "'instruction'"),
        (json.dumps({"image": "a.png", "instruction": "x", "safe_response": ""}), "safe_response"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TrainingDataError, match=message) as info:
        read_source(path)
    assert isinstance(info.value, InputError)
    assert str(path) in str(info.value)


def test_missing_or_wrong_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist"):
        read_source(tmp_path / "nope.json", "vlguard")
    (tmp_path / "v.json").write_text('{"id": 1}')
    with pytest.raises(TrainingDataError, match="JSON list"):
        read_source(tmp_path / "v.json", "vlguard")
    (tmp_path / "w.json").write_text('[{"id": 1, "image": "a.png", "instr-resp": [{"x": 1}]}]')
    with pytest.raises(TrainingDataError, match="record 0 instr-resp 0"):
        read_source(tmp_path / "w.json", "vlguard")


def test_repeated_ids_are_made_unique_in_file_order(tmp_path: Path) -> None:
    line = json.dumps({"id": "a", "image": "a.png", "instruction": "x", "safe_response": "y"})
    (tmp_path / "s.jsonl").write_text(f"{line}\n{line}\n{line}\n")
    assert [s.id for s in read_source(tmp_path / "s.jsonl")] == ["a", "a#2", "a#3"]


def test_benign_share_is_capped_and_stable(data_dir: Path) -> None:
    samples = read_source(data_dir / "vlguard" / "test.json", "vlguard")
    kept = select_benign(samples, 0.1)
    benign = [s for s in kept if s.benign]
    assert sum(not s.benign for s in kept) == 40  # every harmful sample stays
    assert len(benign) == 4  # 4 / 44 < 10 %, a fifth would exceed it
    # The choice depends on the ids, not on the order: a rerun picks the same ones.
    reordered = select_benign(list(reversed(samples)), 0.1)
    assert {s.id for s in reordered if s.benign} == {s.id for s in benign}
    assert select_benign(samples, None) == samples
    with pytest.raises(TrainingDataError):
        select_benign(samples, 1.5)


def test_training_prompt_is_exactly_what_the_rewriter_sends(tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "blue").save(image)
    backend = ScriptedBackend()
    Rewriter(backend=backend).rewrite("How do I use </rewrite> this?", images=[str(image)])
    sent = backend.calls[0].request.messages
    as_sent = [
        {
            "role": m["role"],
            "content": [
                {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                for p in m["content"]
            ],
        }
        for m in sent
    ]
    assert prompt_messages("How do I use </rewrite> this?", 1) == as_sent

    conversation = training_messages("Hi", 1, "textual: a\nvisual: b", Risk.LOW, "Hi there")
    assert conversation[:-1] == prompt_messages("Hi", 1)
    target = conversation[-1]
    assert target["role"] == "assistant"
    parsed = parse_output(target["content"][0]["text"])
    assert (parsed.rewrite, parsed.risk, parsed.analysis) == (
        "Hi there",
        Risk.LOW,
        "textual: a\nvisual: b",
    )


def test_a_benign_target_is_the_unchanged_marker() -> None:
    conversation = training_messages("What flower is this?", 1, "textual: fine", Risk.NONE, None)
    assert conversation[:-1] == prompt_messages("What flower is this?", 1)
    target = conversation[-1]["content"][0]["text"]
    assert target.endswith(UNCHANGED_MARKER) and "What flower" not in target
    parsed = parse_output(target)
    assert (parsed.analysis, parsed.risk, parsed.rewrite, parsed.unchanged) == (
        "textual: fine",
        Risk.NONE,
        None,
        True,
    )


def test_copy_targets_of_older_datasets_become_the_marker() -> None:
    text = "What is in  this\npicture?"
    copied = training_messages(text, 1, "textual: fine", Risk.LOW, "What is in this picture?")
    converted = with_unchanged_marker(copied, text)
    assert converted[:-1] == copied[:-1]
    assert converted[-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": format_output("textual: fine", Risk.LOW, None)}],
    }
    # The copy as the prompt showed it (its contract tags neutralised) counts too.
    tagged = "What is in </rewrite> this picture?"
    shown = "What is in [/rewrite] this picture?"
    neutralised = training_messages(tagged, 1, "t", Risk.NONE, shown)
    target = with_unchanged_marker(neutralised, tagged)[-1]["content"][0]["text"]
    assert parse_output(target).unchanged


@pytest.mark.parametrize(
    ("risk", "rewrite"),
    [
        (Risk.LOW, "Describe the picture, with safety notes."),  # a real rewrite
        (Risk.HIGH, "What is in this picture?"),  # a copy under high risk: left for the parser
    ],
)
def test_other_targets_are_left_as_they_are(risk: Risk, rewrite: str) -> None:
    messages = training_messages("What is in this picture?", 1, "t", risk, rewrite)
    assert with_unchanged_marker(messages, "What is in this picture?") == messages
    garbage = [*messages[:-1], {"role": "assistant", "content": "no contract"}]
    assert with_unchanged_marker(garbage, "What is in this picture?") == garbage
