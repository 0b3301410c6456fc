"""The benchmark report: samples run and skipped, unjudged samples, timings, judge, plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.log import read_eval_log
from inspect_ai.model import ChatMessage, GenerateConfig, ModelOutput, get_model
from PIL import Image

from vlmguard_plugins import Rewriter
from vlmguard_plugins.bench.report import (
    ALL,
    ReportRow,
    build_report,
    collect_rows,
    plot_task,
    plot_tradeoff,
)
from vlmguard_plugins.bench.run import run_benchmark
from vlmguard_plugins.bench.typo import render_typo_images
from vlmguard_plugins.testing import ScriptedBackend

DELAY_S = 0.2  # long enough that event-loop lag on a busy machine stays a fraction of it
SCENARIO = "01-Illegal_Activitiy"


def _model(name: str, reply) -> Any:
    def outputs(input: list[ChatMessage], tools, tool_choice, config: GenerateConfig):
        return ModelOutput.from_content(name, reply(input[-1].text))

    return get_model(name, custom_outputs=outputs)


def _all_row(log_dir: Path) -> ReportRow:
    return next(r for r in collect_rows(log_dir) if r.category == ALL)


def test_rewriter_call_time_is_reported_apart_from_queueing(data_dir: Path, tmp_path: Path) -> None:
    # 50 samples at once through a rewriter that takes 8 at a time: most of a rewrite's
    # time is waiting for a slot, and only the model call is the rewriter's own latency.
    backend = ScriptedBackend.rewriting_to("Describe the image.", risk="low", delay_s=DELAY_S)
    success, _ = run_benchmark(
        ["figstep"],
        [_model("mockllm/model", lambda text: "An answer.")],
        ["vlmguard"],
        data_dir=data_dir,
        log_dir=tmp_path,
        rewriter=Rewriter(backend=backend, max_concurrency=8),
        max_samples=50,
        display="none",
        retry_attempts=0,
    )
    assert success and len(backend.calls) == 50
    assert backend.max_in_flight == 8
    row = _all_row(tmp_path)
    delay_ms = DELAY_S * 1000
    assert delay_ms <= row.rewriter_call_p50_ms <= 3 * delay_ms
    assert row.rewriter_call_p50_ms <= row.rewriter_call_p95_ms
    # The queue is reported on its own: with 50 waiting for 8 slots, the median waits
    # at least one call's time, and the whole rewrite is the call plus the wait.
    assert row.rewriter_queue_p50_ms >= delay_ms
    assert row.rewriter_total_p50_ms > row.rewriter_call_p50_ms
    assert row.extra_target_calls == 0 and row.fallbacks == 0

    build_report(tmp_path, tmp_path / "report")
    (csv_row,) = [
        r for r in csv.DictReader((tmp_path / "report" / "figstep-tiny.csv").open())
        if r["category"] == ALL
    ]  # fmt: skip
    assert float(csv_row["rewriter_call_p50_ms"]) == pytest.approx(row.rewriter_call_p50_ms)
    assert float(csv_row["rewriter_queue_p50_ms"]) == pytest.approx(row.rewriter_queue_p50_ms)


@pytest.fixture(scope="module")
def typo_images(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mmsb-imgs")
    render_typo_images(data_dir, out, scenarios=[SCENARIO])
    return out


def test_skipped_and_unjudged_samples_are_counted(
    data_dir: Path, typo_images: Path, tmp_path: Path
) -> None:
    answers: list[str] = []

    def target_reply(prompt: str) -> str:
        answers.append(f"answer {len(answers) + 1}.")
        return answers[-1]

    def judge_reply(prompt: str) -> str:
        # No readable verdict for the first sample's answer; then safe, unsafe, safe.
        if "answer 1." in prompt:
            return "I would rather not say."
        return "safe" if any(f"answer {n}." in prompt for n in (2, 4)) else "unsafe"

    success, logs = run_benchmark(
        ["mm_safetybench:tiny"],
        [_model("mockllm/model", target_reply)],
        ["none"],
        data_dir=data_dir,
        log_dir=tmp_path,
        judge="published",
        judge_model=_model("mockllm/judge", judge_reply),
        image_dirs={"mm_safetybench": str(typo_images)},
        missing_images="skip",
        limit=4,
        max_samples=1,  # one sample at a time: sample n gets "answer n."
        display="none",
        retry_attempts=0,
    )
    assert success
    samples = read_eval_log(logs[0].location).samples or []
    values = [(s.scores or {})["mm_safetybench_judge"].value for s in samples]
    judged = [v["safe"] for v in values if isinstance(v, dict)]
    assert len(samples) == 4 and judged.count(None) == 1

    row = _all_row(tmp_path)
    assert (row.samples, row.unjudged, row.safety_judged) == (4, 1, 3)
    assert row.safety_rate == pytest.approx(2 / 3)  # over the judged samples only
    # Tiny MM-SafetyBench over the two scenarios here: 10 + 13 questions x 3 image kinds;
    # only scenario 01's TYPO images exist, so 10 records remain, 4 of them run.
    assert row.skipped_reasons == "missing image: 59; not run (--limit): 6"
    assert row.skipped == 65
    assert row.protocol and row.judge == "published"
    assert "mockllm/judge" in row.judge_model

    build_report(tmp_path, tmp_path / "report")
    markdown = (tmp_path / "report" / "mm-safetybench-tiny.md").read_text()
    assert "| 66.7% (3 judged of 4) |" in markdown
    assert "| 65 (missing image: 59; not run (--limit): 6) | 1 |" in markdown
    assert "judge model: mockllm/judge" in markdown
    # MM-SafetyBench rows per scenario and per image kind.
    groups = {r.category for r in collect_rows(tmp_path)}
    assert {ALL, SCENARIO, "kind: TYPO"} <= groups


def _row(defense: str, target: str, **values: float) -> ReportRow:
    base: dict[str, Any] = {f: math.nan for f in ReportRow.__dataclass_fields__}
    base.update(
        task="t", defense=defense, target=target, category=ALL, samples=10, skipped=0,
        skipped_reasons="", unjudged=0, safety_judged=10, helpful_judged=10,
        safety_score_judged=10, fallbacks=0,
        extra_target_calls=0, judge="paper", judge_model="j", protocol="paper",
        status="success",
    )  # fmt: skip
    base.update(values)
    return ReportRow(**base)


def test_coinciding_points_are_all_visible(tmp_path: Path) -> None:
    rows = [
        _row("none", "vlm-a", safety_rate=0.5, helpfulness=0.5),
        _row("static_shield", "vlm-a", safety_rate=0.5, helpfulness=0.5),
        _row("vlmguard", "vlm-a", safety_rate=0.9, helpfulness=0.7),
    ]
    plot = plot_task("t", rows, tmp_path / "t.png")
    positions = [(x, y) for _, x, y in plot.marks]
    assert len(plot.marks) == 3 and len(set(positions)) == 3
    assert plot.xlabel.startswith("helpfulness") and plot.ylabel == "safety rate"
    with Image.open(tmp_path / "t.png") as image:
        assert image.format == "PNG"


def test_a_utility_task_gets_no_safety_axis(tmp_path: Path) -> None:
    rows = [
        _row("none", "vlm-a", helpfulness=0.42),
        _row("vlmguard", "vlm-a", helpfulness=0.40),
    ]
    plot = plot_task("mmvet", rows, tmp_path / "mmvet.png")
    assert plot.ylabel == "MM-Vet score" and "safety" not in plot.ylabel + plot.xlabel
    assert [(label, y) for label, _, y in plot.marks] == [
        ("none | vlm-a", 0.42),
        ("vlmguard | vlm-a", 0.40),
    ]


def test_tradeoff_pairs_safety_with_the_same_defence_and_target_on_mmvet(
    tmp_path: Path,
) -> None:
    safety = [
        _row("none", "vlm-a", safety_score=4.0),
        _row("vlmguard", "vlm-a", safety_score=9.0),
        _row("ecso", "vlm-a", safety_score=6.0),  # no MM-Vet run: not drawn
    ]
    utility = [
        _row("none", "vlm-a", helpfulness=0.5),
        _row("vlmguard", "vlm-a", helpfulness=0.45),
    ]
    plot = plot_tradeoff("siuo", safety, utility, tmp_path / "tradeoff.png")
    assert plot is not None
    # The paper's score keeps its own 0-10 scale, as in the table.
    assert (plot.xlabel, plot.ylabel) == ("utility: MM-Vet score", "siuo: safety score (0-10)")
    assert sorted((label, x, y) for label, x, y in plot.marks) == [
        ("none | vlm-a", 0.5, 4.0),
        ("vlmguard | vlm-a", 0.45, 9.0),
    ]
    assert plot_tradeoff("siuo", safety, [], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
