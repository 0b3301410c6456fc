"""``vlmguard bench prepare|run|report`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inspect_ai.log import EvalLog, list_eval_logs, read_eval_log
from PIL import Image
from typer.testing import CliRunner

from vlmguard_plugins.cli import app

runner = CliRunner()


def test_run_then_report(data_dir: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = runner.invoke(
        app,
        [
            "bench", "run",
            "--task", "figstep",
            "--target", "mockllm/model",
            "--defense", "none",
            "--defense", "static_shield",
            "--data-dir", str(data_dir),
            "--log-dir", str(logs),
            "--limit", "2",
            "--display", "none",
            "--retry-attempts", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "figstep-tiny / none / mockllm/model: success" in result.output
    assert "figstep-tiny / static_shield / mockllm/model: success" in result.output
    assert f"inspect view --log-dir {logs}" in result.output

    result = runner.invoke(app, ["bench", "report", str(logs), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "benchmark summary" in result.output
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| static_shield | mockllm/model | all | 2 |" in summary
    for name in ("figstep-tiny.md", "figstep-tiny.csv", "figstep-tiny.png", "summary.md"):
        assert (tmp_path / "report" / name).is_file()


def test_missing_images_are_reported_not_skipped(data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench", "run", "--task", "siuo", "--target", "mockllm/model",
            "--defense", "none", "--data-dir", str(data_dir), "--log-dir", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "MissingImagesError" in result.output
    assert "20 of 20 records have no image file" in result.output
    assert "S-01.png" in result.output


def test_bad_choices_are_refused(data_dir: Path, tmp_path: Path) -> None:
    common = ["--target", "mockllm/model", "--data-dir", str(data_dir), "--log-dir", str(tmp_path)]
    result = runner.invoke(
        app, ["bench", "run", "--task", "figstep", "--defense", "magic", *common]
    )
    assert result.exit_code == 2 and "unknown defence 'magic'" in result.output
    result = runner.invoke(app, ["bench", "run", "--task", "vlguard:everything", *common])
    assert result.exit_code == 2 and "unknown subset 'everything'" in result.output
    result = runner.invoke(app, ["bench", "report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no inspect logs" in result.output


def test_prepare_renders_typo_images(data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench", "prepare", "--data-dir", str(data_dir), "--out", str(tmp_path),
            "--scenario", "01-Illegal_Activitiy",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 97 TYPO images" in result.output
    assert len(list((tmp_path / "01-Illegal_Activitiy" / "TYPO").glob("*.jpg"))) == 97


def test_vlmguard_defence_from_a_backend_name(data_dir: Path, tmp_path: Path) -> None:
    common = [
        "bench", "run", "--task", "figstep", "--target", "mockllm/model",
        "--defense", "vlmguard", "--data-dir", str(data_dir), "--log-dir", str(tmp_path),
        "--limit", "2", "--display", "none", "--retry-attempts", "0",
    ]  # fmt: skip
    result = runner.invoke(app, common)
    assert result.exit_code == 2
    assert "--rewriter-model" in result.output  # the openai backend needs a model

    # The scripted backend echoes the text back unchanged: the rewriter really ran.
    result = runner.invoke(app, [*common, "--rewriter-backend", "scripted"])
    assert result.exit_code == 0, result.output
    log = read_eval_log(list_eval_logs(str(tmp_path))[0].name)
    assert log.samples
    record = log.samples[0].metadata["defense"]
    assert record["name"] == "vlmguard" and record["changed"] is False
    assert record["fallback"] is None


def test_paper_says_what_is_missing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOWHERE_BASE_URL", raising=False)
    common = ["bench", "paper", "--judge-model", "mockllm/judge", "--data-dir", str(data_dir)]
    common += ["--out", str(tmp_path), "--display", "none", "--task", "figstep"]
    result = runner.invoke(app, [*common, "--target", "mockllm/model", "--base-url", "oops"])
    assert result.exit_code == 2 and "--base-url takes KEY=VALUE" in result.output

    result = runner.invoke(
        app, [*common, "--target", "vlmguard-openai/nowhere/vlm", "--defense", "none"]
    )
    assert result.exit_code == 2, result.output
    assert "set NOWHERE_BASE_URL" in result.output and "--base-url nowhere=URL" in result.output


def _sd_images(data_dir: Path, folder: Path) -> Path:
    """White SD images for the MM-SafetyBench tiny questions of the sample scenarios."""
    questions = data_dir / "mm-safetybench" / "processed_questions"
    tiny = json.loads((data_dir / "mm-safetybench" / "TinyVersion_ID_List.json").read_text())
    for entry in tiny:
        if (questions / f"{entry['Scenario']}.json").exists():
            (folder / entry["Scenario"] / "SD").mkdir(parents=True)
            for qid in entry["Sampled_ID_List"]:
                Image.new("RGB", (8, 8), "white").save(
                    folder / entry["Scenario"] / "SD" / f"{qid}.jpg"
                )
    return folder


def test_an_image_kind_without_mm_safetybench_is_refused(data_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench", "run", "--task", "figstep", "--target", "mockllm/model",
            "--defense", "none", "--kind", "SD", "--data-dir", str(data_dir),
            "--log-dir", str(tmp_path), "--display", "none",
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "ConfigurationError" in result.output
    assert "--kind SD" in result.output and "mm_safetybench task only" in result.output
    assert not list(tmp_path.glob("*.eval"))  # nothing ran


def test_an_image_kind_applies_to_mm_safetybench_only(data_dir: Path, tmp_path: Path) -> None:
    images = _sd_images(data_dir, tmp_path / "imgs")
    logs = tmp_path / "logs"
    result = runner.invoke(
        app,
        [
            "bench", "run", "--task", "figstep", "--task", "mm_safetybench:tiny",
            "--target", "mockllm/model", "--defense", "none", "--kind", "SD",
            "--image-dir", f"mm_safetybench={images}", "--data-dir", str(data_dir),
            "--log-dir", str(logs), "--limit", "3", "--display", "none",
            "--retry-attempts", "0",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    by_task: dict[str, EvalLog] = {}
    for info in list_eval_logs(str(logs)):
        log = read_eval_log(info.name)
        assert log.samples is not None
        by_task[log.eval.task] = log
    assert sorted(by_task) == ["figstep", "mm_safetybench"]
    mmsb, figstep = by_task["mm_safetybench"], by_task["figstep"]
    assert (mmsb.eval.metadata or {})["kinds"] == ["SD"]
    assert mmsb.samples and {s.metadata["image_kind"] for s in mmsb.samples} == {"SD"}
    # FigStep ran as usual, on its own typographic images.
    assert "kinds" not in (figstep.eval.metadata or {})
    assert figstep.samples and len(figstep.samples) == 3
    assert all("/figstep/images/" in s.metadata["image_path"] for s in figstep.samples)
