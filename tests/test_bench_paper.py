"""``vlmguard bench paper`` end to end: target, judge and rewriter served on loopback."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from vlmguard_plugins.backends import GenerationRequest
from vlmguard_plugins.bench.defenses import ADASHIELD_S_PROMPT, DEFENSES, ECSO_CAPTION
from vlmguard_plugins.bench.typo import render_typo_images
from vlmguard_plugins.cli import app
from vlmguard_plugins.parsing import format_output
from vlmguard_plugins.testing import ChatCompletionServer
from vlmguard_plugins.types import Risk

REWRITE = "Describe what the image shows and how to stay safe around it."
SAFETY_TASKS = (
    "siuo",
    "mm-safetybench-all",
    "vlguard-unsafes",
    "vlguard-safe_unsafes",
    "vlguard-safe_safes",
)


def _text(request: GenerationRequest) -> str:
    content = request.messages[-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def _target(request: GenerationRequest) -> str:
    text = _text(request)
    if "Answer only Yes or No" in text:
        return "Yes"  # ECSO's self-check finds harm, so it takes its second pass
    return "Here is a careful answer."


def _judge(request: GenerationRequest) -> str:
    text = _text(request)
    if "Safety: <0-10>" in text:  # the paper's form
        return "Safety: 8\nHelpful: yes\nReason: careful."
    if "<AND>" in text or "Compare the ground truth and prediction" in text:  # MM-Vet
        return "0.6"
    return "safe"


def _rewriter(request: GenerationRequest) -> str:
    return format_output("textual: t\nvisual: v\ncross-modal: c", Risk.MEDIUM, REWRITE)


def _draw(records: list[dict[str, Any]], folder: Path) -> Path:
    """SIUO's and VLGuard's images are not redistributed: draw one per record."""
    for number, record in enumerate(records):
        path = folder / record["image"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 32), (number * 7 % 256, 80, 160)).save(path)
    return folder


@pytest.fixture(scope="module")
def images(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper-images")
    typo = root / "mm-safetybench"
    render_typo_images(data_dir, typo, scenarios=["01-Illegal_Activitiy"])
    return {
        "siuo": _draw(json.loads((data_dir / "siuo/siuo_gen.json").read_text()), root / "siuo"),
        "vlguard": _draw(json.loads((data_dir / "vlguard/test.json").read_text()), root / "vg"),
        "mm_safetybench": typo,
    }


@pytest.fixture
def servers() -> Iterator[dict[str, ChatCompletionServer]]:
    with (
        ChatCompletionServer(responder=_target, model="the-vlm") as target,
        ChatCompletionServer(responder=_judge, model="the-judge") as judge,
        ChatCompletionServer(responder=_rewriter, model="the-rewriter") as rewriter,
    ):
        yield {"target": target, "judge": judge, "rewriter": rewriter}


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_paper_runs_every_defence_on_every_benchmark_and_writes_the_report(
    data_dir: Path,
    images: dict[str, Path],
    servers: dict[str, ChatCompletionServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for service in ("TARGET", "JUDGE"):  # the command sets these; restore them afterwards
        monkeypatch.setenv(f"{service}_BASE_URL", "unset")
        monkeypatch.delenv(f"{service}_API_KEY", raising=False)
    out = tmp_path / "paper"
    result = CliRunner().invoke(
        app,
        [
            "bench", "paper",
            "--target", "vlmguard-openai/target/the-vlm",
            "--judge-model", "vlmguard-openai/judge/the-judge",
            "--base-url", f"target={servers['target'].base_url}",
            "--base-url", f"judge={servers['judge'].base_url}",
            "--rewriter-base-url", servers["rewriter"].base_url,
            "--rewriter-model", "the-rewriter",
            "--data-dir", str(data_dir),
            *[f"--image-dir={task}={folder}" for task, folder in images.items()],
            "--skip-missing-images",
            "--limit", "2",
            "--temperature", "0.7",
            "--out", str(out),
            "--display", "none",
            "--retry-attempts", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = out / "report"
    tasks = (*SAFETY_TASKS, "mmvet")
    for task in tasks:
        for suffix in ("md", "csv", "png"):
            assert (report / f"{task}.{suffix}").is_file(), f"{task}.{suffix}"
    for task in SAFETY_TASKS:
        assert (report / f"tradeoff-{task}.png").is_file()
    assert f"wrote {report / 'summary.md'}" in result.output

    summary = _rows(report / "summary.csv")
    assert {(r["task"], r["defense"]) for r in summary} == {
        (task, defense) for task in tasks for defense in DEFENSES
    }
    for row in summary:
        assert row["target"] == "vlmguard-openai/target/the-vlm"
        assert row["samples"] == "2" and row["status"] == "success"
        assert row["judge_model"] == "vlmguard-openai/judge/the-judge"
    by = {(r["task"], r["defense"]): r for r in summary}
    # MM-Vet's grader said 0.6 to every answer; the paper judge 8 of 10 for safety.
    assert float(by[("mmvet", "none")]["helpfulness"]) == pytest.approx(0.6)
    assert float(by[("siuo", "vlmguard")]["safety_score"]) == pytest.approx(8.0)
    # ECSO made three extra target calls per response (SIUO: 3 responses per item).
    assert by[("siuo", "ecso")]["extra_target_calls"] == str(3 * 3 * 2)
    assert by[("mmvet", "ecso")]["extra_target_calls"] == str(3 * 2)
    assert by[("siuo", "none")]["extra_target_calls"] == "0"
    # Only scenario 01's TYPO images exist: the rest of MM-SafetyBench is counted as skipped.
    assert "missing image: 584" in by[("mm-safetybench-all", "none")]["skipped_reasons"]
    assert float(by[("siuo", "vlmguard")]["rewriter_call_p50_ms"]) > 0

    # What each server received.
    target_bodies = [r.body or {} for r in servers["target"].chat_requests]
    target_texts = [json.dumps(body["messages"][-1]["content"]) for body in target_bodies]
    assert any(REWRITE in t for t in target_texts)  # the vlmguard defence's rewrite
    rewritten = [body for body in target_bodies if REWRITE in json.dumps(body)]
    assert rewritten and all(body["temperature"] == 0.7 for body in rewritten)
    assert any(json.dumps(ADASHIELD_S_PROMPT)[1:-1] in t for t in target_texts)
    assert any(ECSO_CAPTION.split("{")[0] in t for t in target_texts)
    rewriter_parts = [
        (r.body or {})["messages"][-1]["content"] for r in servers["rewriter"].chat_requests
    ]
    assert rewriter_parts and all(
        any(p.get("type") == "image_url" for p in parts) for parts in rewriter_parts
    )
    assert servers["judge"].chat_requests

    markdown = (report / "siuo.md").read_text()
    assert "judge model: vlmguard-openai/judge/the-judge" in markdown
    assert "| adashield_s | vlmguard-openai/target/the-vlm | all | 2 |" in markdown
    assert "| 8.0 (2 judged of 2) |" in markdown  # the paper judge's score and its count
