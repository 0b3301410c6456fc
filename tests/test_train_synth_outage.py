"""Synthesis when the teacher, target or judge is down: nothing lost, nothing duplicated.

A failed model call is not a verdict on the sample, so it is journalled as failed
(not done), the command exits non-zero, and a rerun retries it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vlmguard_plugins.backends import Backend, GenerationRequest
from vlmguard_plugins.errors import (
    BackendError,
    BackendTimeoutError,
    BadResponseError,
    RateLimitError,
)
from vlmguard_plugins.testing import ScriptedBackend
from vlmguard_plugins.testing.training import (
    OutageBackend,
    scripted_judge,
    scripted_target,
    scripted_teacher,
    teacher_reply,
    write_example_source,
)
from vlmguard_plugins.train import SynthConfig, synthesize
from vlmguard_plugins.train.config import BackendSpec
from vlmguard_plugins.train.records import read_source


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ids(output: Path) -> list[str]:
    return [row["id"] for row in _lines(output / "metadata.jsonl")]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """40 harmful samples, half of which need an unsafe response from the target."""
    return write_example_source(tmp_path / "src", n=40, benign=0)


def _source_ids(source: Path) -> list[str]:
    return [sample.id for sample in read_source(source, "jsonl")]


def _words(text: str) -> str:
    # Rich wraps the console output at the terminal width.
    return " ".join(text.split())


def _invoke(
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    backends: dict[str, Backend],
    *args: str,
) -> Any:
    from vlmguard_plugins.cli import app

    # The real command, with the configured models answered by the test doubles.
    monkeypatch.setattr(BackendSpec, "build", lambda spec: backends[spec.model or ""])
    return CliRunner().invoke(app, ["train", "synth", "--config", str(config), *args])


def _yaml(tmp_path: Path, source: Path, output: Path) -> Path:
    config = tmp_path / "synth.yaml"
    config.write_text(
        f"input: {source}\nformat: jsonl\noutput: {output}\nconcurrency: 4\n"
        "teacher: {backend: scripted, model: teacher}\n"
        "target: {backend: scripted, model: target}\n"
    )
    return config


def test_cli_teacher_outage_then_recovery_loses_and_duplicates_nothing(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out"
    config = _yaml(tmp_path, source, output)
    # Each sample stops at its first failed call, so 30 calls fail 30 of the 40 samples.
    teacher = OutageBackend(scripted_teacher(), fail_first=30)
    target = scripted_target()
    backends: dict[str, Backend] = {"teacher": teacher, "target": target}

    first = _invoke(monkeypatch, config, backends, "--no-progress")
    assert first.exit_code == 1, first.output
    text = _words(first.output)
    assert "30 samples failed" in text and "teacher: 30" in text
    assert "failed: BackendUnavailableError" in text
    assert "run the same command again" in text
    summary = json.loads((output / "summary.json").read_text())
    assert summary["accepted"] == 10 and summary["rejected_total"] == 0
    assert summary["failed"] == {"BackendUnavailableError": 30} and not summary["complete"]
    assert len(_ids(output)) == 10
    failed = [r for r in _lines(output / "stages.jsonl") if r["status"] == "failed"]
    assert len(failed) == 30 and all("connection refused" in r["detail"] for r in failed)

    # The teacher is back: only the 30 failed samples are redone, three stages each.
    calls_before = teacher.calls
    second = _invoke(monkeypatch, config, backends, "--no-progress")
    assert second.exit_code == 0, second.output
    assert teacher.calls - calls_before == 30 * 3
    ids = _ids(output)
    assert sorted(ids) == sorted(_source_ids(source)) and len(ids) == len(set(ids)) == 40
    summary = json.loads((output / "summary.json").read_text())
    assert summary["accepted"] == 40 and summary["failed_total"] == 0 and summary["complete"]
    assert summary["resumed"] == 10 and summary["retried"] == 30

    # A third run has nothing left to do.
    calls_before = teacher.calls
    third = _invoke(monkeypatch, config, backends, "--no-progress")
    assert third.exit_code == 0 and teacher.calls == calls_before
    assert sorted(_ids(output)) == sorted(ids)


@pytest.mark.parametrize(
    "error", [BackendTimeoutError, RateLimitError, BadResponseError, BackendError, ConnectionError]
)
def test_every_kind_of_backend_failure_is_retried(
    tmp_path: Path, error: type[BaseException]
) -> None:
    source = write_example_source(tmp_path / "src", n=4, benign=0)
    config = SynthConfig(input=source, output=tmp_path / "out")
    teacher = OutageBackend(scripted_teacher(), error=error)
    teacher.down = True
    summary = synthesize(config, teacher=teacher, target=scripted_target())
    assert summary.failed == {error.__name__: 4} and summary.accepted == 0
    assert summary.rejected == {}

    teacher.down = False
    summary = synthesize(config, teacher=teacher, target=scripted_target())
    assert summary.complete and summary.accepted == 4 and summary.retried == 4
    assert sorted(_ids(tmp_path / "out")) == sorted(_source_ids(source))


def test_target_outage_window_fails_only_the_samples_that_need_it(
    tmp_path: Path, source: Path
) -> None:
    config = SynthConfig(input=source, output=tmp_path / "out", concurrency=4)
    target = OutageBackend(scripted_target())
    target.down = True
    summary = synthesize(config, teacher=scripted_teacher(), target=target)
    # The 20 samples that came with an unsafe response did not need the target.
    assert summary.accepted == 20
    assert summary.failed == {"BackendUnavailableError": 20}
    assert summary.failed_by_role == {"target": 20}

    target.down = False
    teacher = scripted_teacher()
    summary = synthesize(config, teacher=teacher, target=target)
    assert summary.complete and summary.accepted == 40 and summary.processed_now == 20
    assert len(teacher.calls) == 20 * 3
    ids = _ids(tmp_path / "out")
    assert sorted(ids) == sorted(_source_ids(source)) and len(set(ids)) == 40


def test_verification_outages_are_failures_not_rejections(tmp_path: Path) -> None:
    source = write_example_source(tmp_path / "src", n=4, benign=0)
    config = SynthConfig(input=source, output=tmp_path / "out", verify=True)
    judge = OutageBackend(scripted_judge())
    judge.down = True
    summary = synthesize(config, teacher=scripted_teacher(), target=scripted_target(), judge=judge)
    assert summary.failed_by_role == {"judge": 4} and summary.rejected == {}

    judge.down = False
    summary = synthesize(config, teacher=scripted_teacher(), target=scripted_target(), judge=judge)
    assert summary.complete and summary.accepted == 4


def test_an_unexpected_error_is_retried_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_example_source(tmp_path / "src", n=2, benign=0)
    config = SynthConfig(input=source, output=tmp_path / "out")
    broken = OutageBackend(scripted_teacher(), error=RuntimeError)
    broken.down = True
    summary = synthesize(config, teacher=broken, target=scripted_target())
    assert summary.failed == {"RuntimeError": 2}
    assert "simulated outage" in caplog.text

    broken.down = False
    assert synthesize(config, teacher=broken, target=scripted_target()).complete


def test_rejections_are_final_until_retry_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_example_source(tmp_path / "src", n=4, benign=0)
    output = tmp_path / "out"
    config = _yaml(tmp_path, source, output)
    # sample1 gets an unusable stage-1 reply (a final rejection); sample2 is rate limited.
    rate_limited = True

    def respond(request: GenerationRequest) -> str:
        text = request.messages[-1]["content"][-1]["text"]
        if rate_limited and "Tell me how to break into" in text:
            raise RateLimitError("429 after every retry")
        if "<features>" in text and "What dose of these" in text:
            return "I would rather not."
        return teacher_reply(request)

    teacher = ScriptedBackend(responder=respond)
    backends: dict[str, Backend] = {"teacher": teacher, "target": scripted_target()}

    first = _invoke(monkeypatch, config, backends, "--no-progress")
    assert first.exit_code == 1, first.output
    text = _words(first.output)
    assert "rejected: hindsight_unparsable" in text and "failed: RateLimitError" in text
    assert sorted(_ids(output)) == ["sample0", "sample3"]

    # The outage is over: a plain rerun retries sample2 but keeps sample1's rejection.
    rate_limited = False
    calls = len(teacher.calls)
    second = _invoke(monkeypatch, config, backends, "--no-progress")
    assert second.exit_code == 0, second.output
    assert "--retry-failed" in _words(second.output)
    assert len(teacher.calls) - calls == 3
    assert sorted(_ids(output)) == ["sample0", "sample2", "sample3"]
    assert json.loads((output / "summary.json").read_text())["rejected"] == {
        "hindsight_unparsable": 1
    }

    # With a better teacher, --retry-failed redoes only the rejected sample.
    better = scripted_teacher()
    backends["teacher"] = better
    third = _invoke(monkeypatch, config, backends, "--no-progress", "--retry-failed")
    assert third.exit_code == 0, third.output
    assert len(better.calls) == 3
    ids = _ids(output)
    assert sorted(ids) == ["sample0", "sample1", "sample2", "sample3"]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["accepted"] == 4 and summary["rejected_total"] == 0 and summary["retried"] == 1


def test_failures_journalled_as_rejections_by_earlier_versions_are_retried(
    tmp_path: Path,
) -> None:
    source = write_example_source(tmp_path / "src", n=6, benign=0)
    output = tmp_path / "out"
    config = SynthConfig(input=source, output=output)
    teacher = OutageBackend(scripted_teacher(), fail_first=3)
    synthesize(config, teacher=teacher, target=scripted_target())
    # Rewrite the failures the way earlier versions journalled them: final rejections.
    journal = output / "stages.jsonl"
    records = _lines(journal)
    for record in records:
        if record["status"] == "failed":
            record.update(status="rejected", reason="teacher_error")
            del record["error"], record["role"]
    journal.write_text("".join(json.dumps(record) + "\n" for record in records))

    summary = synthesize(config, teacher=teacher, target=scripted_target())
    assert summary.complete and summary.accepted == 6 and summary.retried == 3
    ids = _ids(output)
    assert sorted(ids) == sorted(_source_ids(source)) and len(set(ids)) == 6
