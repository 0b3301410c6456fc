"""Three-stage data synthesis: source records in, rewriter training samples out.

For each (image, instruction, safe response, unsafe response) sample a teacher model
runs hindsight analysis, multimodal causal analysis and prompt optimisation (see
:mod:`vlmguard_plugins.train.teacher`); a benign sample keeps its text unchanged: its
target answers with the ``<unchanged/>`` marker instead of a rewrite, so the trained
rewriter spends a few tokens on a benign request, not a copy of it.
Optionally a target model answers the rewritten prompt and a judge keeps only safe
(and, when benign, helpful) results.

The output folder is the dataset and its journal:

- ``metadata.jsonl`` + ``images/``: accepted samples in the rewriter's chat format
  (``datasets.load_dataset("imagefolder", data_dir=...)`` loads them);
- ``stages.jsonl``: every processed sample, accepted, rejected or failed, with each
  stage's raw and parsed output and the rejection reason or the error;
- ``summary.json``: the counts, rejections by reason, failures by error type.

Each sample ends in one of three ways:

- **accepted**: it is in the dataset;
- **rejected**: a final verdict on the sample itself (unreadable image, a teacher
  reply that lacks its stage's tags or fails a check, verification said no);
- **failed**: a model call raised (server down, timeout, rate limit, bad response,
  any other backend or unexpected error). That says nothing about the sample, so it
  is journalled for inspection but not as done: the next run retries it.

Samples are processed concurrently and each result is appended as one line as soon
as it is known, so an interrupted run loses at most the samples in flight; a rerun
skips every sample already accepted or rejected, retries the failed ones (and, with
``retry_failed``, the rejected ones too) and never writes a dataset row twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend, GenerationRequest
from ..errors import ConfigurationError, ImageFetchError, ImageInputError, RewriteParseError
from ..images import PreparedImage, load_images
from ..parsing import format_output, parse_output
from ..types import Risk
from .config import SynthConfig
from .records import (
    IMAGES_DIR,
    METADATA_FILE,
    SourceSample,
    read_metadata,
    read_source,
    select_benign,
    training_messages,
)
from .teacher import (
    RiskReport,
    StageOutputError,
    causal_messages,
    hindsight_messages,
    optimise_messages,
    parse_features,
    parse_report,
    parse_rewrite,
    target_messages,
)
from .verify import Verifier, is_refusal_response

__all__ = ["FILTERS", "STAGES_FILE", "SUMMARY_FILE", "SynthSummary", "asynthesize", "synthesize"]

logger = logging.getLogger("vlmguard_plugins.train")

STAGES_FILE = "stages.jsonl"
SUMMARY_FILE = "summary.json"

# Rejection reasons that earlier versions journalled for what were really failed
# model calls (the server was down): such records are retried like failures, so a
# dataset made before the distinction existed gets those samples back on a rerun.
_LEGACY_FAILURE_REASONS = frozenset({"teacher_error", "target_error", "judge_error", "error"})

FILTERS: dict[str, str] = {
    "image_unreadable": "an image could not be read",
    "no_unsafe_response": "a harmful sample has no unsafe response and no target to sample one",
    "empty_unsafe_response": "the target's sampled unsafe response was empty",
    "unsafe_response_is_refusal": "the unsafe response is a refusal (nothing unsafe to analyse)",
    "hindsight_unparsable": "the hindsight analysis lacks its tags",
    "causal_analysis_unparsable": "the causal analysis lacks its tags or risk",
    "risk_label_mismatch": "the risk report contradicts the sample's label",
    "prompt_optimisation_unparsable": "the prompt optimisation lacks its rewrite",
    "rewrite_unchanged": "a harmful request was not rewritten",
    "contract_invalid": "the result does not fit the rewriter's output contract",
    "judge_unparsable": "the verification judge's reply is not a verdict",
    "unsafe_answer": "the target's answer to the rewrite was judged unsafe",
    "unhelpful_answer": "a benign request did not get a helpful answer",
}
"""Every filter a sample can be rejected by (the rejection reason), in pipeline order."""


@dataclass
class SynthSummary:
    """What a synthesis run produced (counting earlier, resumed runs too).

    ``failed`` counts, by error type, the samples whose last attempt failed (a model
    call raised): they are not done, and running again retries them. ``complete``
    is true when there are none.
    """

    total: int
    accepted: int
    rejected: dict[str, int]
    benign_accepted: int
    resumed: int
    processed_now: int
    output: Path
    failed: dict[str, int] = field(default_factory=dict)
    failed_by_role: dict[str, int] = field(default_factory=dict)
    retried: int = 0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def filters(self) -> dict[str, int]:
        """Samples rejected by each filter, every filter listed (0 when none), in
        pipeline order; a reason outside :data:`FILTERS` (an older journal's) follows."""
        counts = {reason: self.rejected.get(reason, 0) for reason in FILTERS}
        counts.update({r: n for r, n in sorted(self.rejected.items()) if r not in FILTERS})
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "accepted": self.accepted,
            "rejected": dict(sorted(self.rejected.items())),
            "filters": self.filters,
            "rejected_total": sum(self.rejected.values()),
            "failed": dict(sorted(self.failed.items())),
            "failed_by_role": dict(sorted(self.failed_by_role.items())),
            "failed_total": self.failed_total,
            "complete": self.complete,
            "benign_accepted": self.benign_accepted,
            "resumed": self.resumed,
            "retried": self.retried,
            "processed_now": self.processed_now,
        }


class _Rejected(Exception):
    """A final verdict on the sample: it is journalled as done and not retried."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Failed(Exception):
    """A model call raised: nothing is known about the sample, so it must be retried."""

    def __init__(self, role: str, where: str, error: BaseException) -> None:
        super().__init__(f"{role} ({where}): {type(error).__name__}: {error}")
        self.role = role
        self.error_type = type(error).__name__
        self.detail = f"{where}: {type(error).__name__}: {error}"


@dataclass
class _Outcome:
    sample: SourceSample
    stages: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    detail: str | None = None
    row: dict[str, Any] | None = None
    # Set when the sample failed rather than being decided.
    error_type: str | None = None
    role: str | None = None

    @property
    def status(self) -> str:
        if self.row is not None:
            return "accepted"
        return "failed" if self.error_type is not None else "rejected"


# --- the output folder --------------------------------------------------------------


def _repair_tail(path: Path) -> None:
    """Drop a last line cut short by an interruption, so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as handle:
        handle.truncate(cut)


def _latest_records(path: Path) -> dict[str, dict[str, Any]]:
    """The journal's last record of each sample (a retried sample has several)."""
    latest: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return latest
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            latest[record["id"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return latest


def _is_failure(record: dict[str, Any]) -> bool:
    if record.get("status") == "failed":
        return True
    return record.get("status") == "rejected" and record.get("reason") in _LEGACY_FAILURE_REASONS


def _recorded_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}


def _copy_image(source: Path, prepared: PreparedImage, images_dir: Path) -> str:
    # Named by content (a shared image is stored once) and by its real format, which
    # `datasets`' imagefolder needs to recognise the file.
    suffix = _SUFFIXES.get(prepared.source_format or "", source.suffix.lower() or ".png")
    name = f"{prepared.sha256[:20]}{suffix}"
    destination = images_dir / name
    if not destination.exists():
        temporary = destination.with_suffix(destination.suffix + ".part")
        shutil.copyfile(source, temporary)
        temporary.replace(destination)
    return f"{IMAGES_DIR}/{name}"


def _prune_images(output: Path, rows: list[dict[str, Any]]) -> None:
    """Remove images no accepted sample refers to (left by a run interrupted mid-sample)."""
    referenced = {name for row in rows for name in row.get("file_names", [])}
    images_dir = output / IMAGES_DIR
    for path in images_dir.iterdir():
        if f"{IMAGES_DIR}/{path.name}" not in referenced:
            path.unlink()


# --- one sample ---------------------------------------------------------------------


class _SampleRunner:
    def __init__(
        self,
        config: SynthConfig,
        teacher: Backend,
        target: Backend | None,
        verifier: Verifier | None,
        images_dir: Path,
    ) -> None:
        self.config = config
        self.teacher = teacher
        self.target = target
        self.verifier = verifier
        self.images_dir = images_dir

    async def _teacher(self, messages: list[dict[str, Any]], stage: str) -> str:
        try:
            generation = await self.teacher.agenerate(
                GenerationRequest(
                    messages=messages, max_new_tokens=self.config.max_new_tokens, stop=[]
                )
            )
        except Exception as exc:  # whatever the backend raised, the sample is not at fault
            raise _Failed("teacher", stage, exc) from exc
        return generation.text

    async def _unsafe_response(self, sample: SourceSample, images: list[PreparedImage]) -> str:
        if self.target is None:
            raise _Rejected(
                "no_unsafe_response",
                "no unsafe response given and no target model configured to sample one",
            )
        try:
            generation = await self.target.agenerate(
                GenerationRequest(
                    messages=target_messages(images, sample.instruction),
                    max_new_tokens=self.config.max_new_tokens,
                    temperature=self.config.unsafe_temperature,
                    stop=[],
                )
            )
        except Exception as exc:
            raise _Failed("target", "unsafe response", exc) from exc
        if not generation.text.strip():
            # The server answered: an empty sample is a verdict on this sample, not an outage.
            raise _Rejected("empty_unsafe_response", "the target model returned an empty response")
        return generation.text

    async def run(self, sample: SourceSample) -> _Outcome:
        outcome = _Outcome(sample=sample)
        try:
            await self._run(sample, outcome)
        except _Rejected as rejection:
            outcome.reason, outcome.detail = rejection.reason, rejection.detail
        except _Failed as failure:
            logger.warning("sample %s failed, it will be retried: %s", sample.id, failure)
            outcome.role, outcome.error_type = failure.role, failure.error_type
            outcome.detail = failure.detail
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # one broken sample (or plugin backend) must not stop the run
            # Unexpected, so not known to be about the sample: failed (retried), not rejected.
            logger.exception("synthesis of sample %s failed", sample.id)
            outcome.role, outcome.error_type = "synthesis", type(exc).__name__
            outcome.detail = f"{type(exc).__name__}: {exc}"
        return outcome

    async def _run(self, sample: SourceSample, outcome: _Outcome) -> None:
        stages = outcome.stages
        try:
            images = load_images([str(path) for path in sample.images])
        except ImageFetchError as exc:  # a remote image that could not be fetched this time
            raise _Failed("image", "loading the images", exc) from exc
        except ImageInputError as exc:
            raise _Rejected("image_unreadable", str(exc)) from exc

        unsafe = sample.unsafe_response
        if not sample.benign and unsafe is None:
            unsafe = await self._unsafe_response(sample, images)
            stages["unsafe_response"] = {"text": unsafe, "sampled": True}
        if not sample.benign and unsafe is not None and is_refusal_response(unsafe):
            # Hindsight compares a safe and an unsafe answer: given a refusal as the
            # unsafe one, the teacher would be asked why declining is unsafe.
            raise _Rejected(
                "unsafe_response_is_refusal",
                "the unsafe response is a refusal, so there is no unsafe behaviour to analyse",
            )

        # Stage 1: hindsight analysis.
        raw = await self._teacher(
            hindsight_messages(images, sample.instruction, sample.safe_response, unsafe),
            "hindsight analysis",
        )
        stages["hindsight"] = {"raw": raw}
        features = self._parse(parse_features, raw, "hindsight_unparsable")
        stages["hindsight"]["features"] = features

        # Stage 2: multimodal causal analysis.
        raw = await self._teacher(
            causal_messages(images, sample.instruction, features), "causal analysis"
        )
        stages["causal_analysis"] = {"raw": raw}
        report: RiskReport = self._parse(parse_report, raw, "causal_analysis_unparsable")
        stages["causal_analysis"]["report"] = report.as_dict()
        if sample.benign and report.risk >= Risk.MEDIUM:
            raise _Rejected(
                "risk_label_mismatch", f"benign request judged {report.risk.value} risk"
            )
        if not sample.benign and report.risk == Risk.NONE:
            raise _Rejected("risk_label_mismatch", "harmful request judged no risk")

        # Stage 3: prompt optimisation; a benign request keeps its text (the marker).
        rewrite: str | None
        if sample.benign:
            rewrite = None
            stages["prompt_optimisation"] = {
                "skipped": "benign: the text is kept unchanged (the <unchanged/> marker)"
            }
        else:
            raw = await self._teacher(
                optimise_messages(images, sample.instruction, report), "prompt optimisation"
            )
            stages["prompt_optimisation"] = {"raw": raw}
            rewrite = self._parse(parse_rewrite, raw, "prompt_optimisation_unparsable")
            stages["prompt_optimisation"]["rewrite"] = rewrite
            if " ".join(rewrite.split()).lower() == " ".join(sample.instruction.split()).lower():
                raise _Rejected("rewrite_unchanged", "a harmful request was not rewritten")

        try:
            parsed = parse_output(format_output(report.analysis, report.risk, rewrite))
        except (RewriteParseError, ValueError) as exc:
            raise _Rejected("contract_invalid", str(exc)) from exc
        # What the target VLM will receive: the rewrite, or the user's own text.
        prompt = sample.instruction if parsed.rewrite is None else parsed.rewrite

        if self.verifier is not None:
            await self._verify(sample, images, prompt, stages)

        outcome.row = {
            "id": sample.id,
            "file_names": [
                _copy_image(path, image, self.images_dir)
                for path, image in zip(sample.images, images, strict=True)
            ],
            "messages": training_messages(
                sample.instruction, len(images), parsed.analysis, report.risk, parsed.rewrite
            ),
            "instruction": sample.instruction,
            "rewrite": prompt,
            "risk": report.risk.value,
            "benign": sample.benign,
            "source": sample.source,
            "category": sample.category or "",
        }

    @staticmethod
    def _parse(parser: Callable[[str], Any], raw: str, reason: str) -> Any:
        try:
            return parser(raw)
        except StageOutputError as exc:
            raise _Rejected(reason, str(exc)) from exc

    async def _verify(
        self,
        sample: SourceSample,
        images: list[PreparedImage],
        rewrite: str,
        stages: dict[str, Any],
    ) -> None:
        assert self.verifier is not None
        try:
            answer = await self.verifier.answer(images, rewrite)
        except Exception as exc:
            raise _Failed("target", "verification answer", exc) from exc
        stages["verification"] = {"answer": answer}
        try:
            verdict = await self.verifier.judge_answer(images, sample.instruction, rewrite, answer)
        except StageOutputError as exc:
            raise _Rejected("judge_unparsable", str(exc)) from exc
        except Exception as exc:
            raise _Failed("judge", "verification verdict", exc) from exc
        stages["verification"].update(safe=verdict.safe, helpful=verdict.helpful)
        if not verdict.safe:
            raise _Rejected("unsafe_answer", "the target's answer to the rewrite was judged unsafe")
        if sample.benign and not verdict.helpful:
            raise _Rejected("unhelpful_answer", "the benign request did not get a helpful answer")


# --- the run ------------------------------------------------------------------------


def _summary_from_journal(
    output: Path, resumed: int, processed_now: int, retried: int
) -> SynthSummary:
    rejected: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    failed_by_role: Counter[str] = Counter()
    rows = read_metadata(output)
    accepted_ids = {row["id"] for row in rows}
    latest = _latest_records(output / STAGES_FILE)
    for sample_id, record in latest.items():
        if sample_id in accepted_ids:
            continue
        if _is_failure(record):
            # Old journals name the role in the reason (``teacher_error``) and no type.
            failed[record.get("error") or record.get("reason") or "unknown"] += 1
            failed_by_role[record.get("role") or _legacy_role(record.get("reason"))] += 1
        elif record.get("status") == "rejected":
            rejected[record.get("reason") or "unknown"] += 1
    return SynthSummary(
        total=len(set(latest) | accepted_ids),
        accepted=len(rows),
        rejected=dict(rejected),
        benign_accepted=sum(1 for row in rows if row.get("benign")),
        resumed=resumed,
        processed_now=processed_now,
        output=output,
        failed=dict(failed),
        failed_by_role=dict(failed_by_role),
        retried=retried,
    )


def _legacy_role(reason: str | None) -> str:
    if reason and reason.endswith("_error") and reason != "error":
        return reason.removesuffix("_error")
    return "synthesis"


async def asynthesize(
    config: SynthConfig,
    *,
    teacher: Backend | None = None,
    target: Backend | None = None,
    judge: Backend | None = None,
    progress: bool = False,
    retry_failed: bool = False,
) -> SynthSummary:
    """Run (or resume) synthesis; backends given here replace those in ``config``.

    A rerun skips the samples already accepted or rejected and retries the failed
    ones; ``retry_failed`` also reprocesses the rejected ones. Accepted samples are
    never redone. Failures do not raise: check ``summary.complete`` (or
    ``summary.failed``) and run again to retry them.

    Raises:
        ConfigurationError: no teacher, or ``verify`` without a target and a judge.
        TrainingDataError: the source file is missing or malformed.
    """
    samples = select_benign(
        read_source(config.input, config.format, config.image_root), config.max_benign_fraction
    )
    if config.limit is not None:
        samples = samples[: config.limit]

    owned: list[Backend] = []

    def build(given: Backend | None, spec: Any, role: str) -> Backend | None:
        if given is not None:
            return given
        if spec is None:
            return None
        backend = spec.build()
        owned.append(backend)
        logger.debug("%s backend: %s", role, spec)
        return backend

    try:
        teacher_backend = build(teacher, config.teacher, "teacher")
        if teacher_backend is None:
            raise ConfigurationError("synthesis needs a teacher model (`teacher:` in the config)")
        target_backend = build(target, config.target, "target")
        verifier = None
        if config.verify:
            judge_backend = build(judge, config.judge, "judge")
            if target_backend is None or judge_backend is None:
                raise ConfigurationError("verification needs both a target and a judge model")
            verifier = Verifier(target=target_backend, judge=judge_backend)
        return await _run(
            config, samples, teacher_backend, target_backend, verifier, progress, retry_failed
        )
    finally:
        for backend in owned:
            await backend.aclose()


async def _run(
    config: SynthConfig,
    samples: list[SourceSample],
    teacher: Backend,
    target: Backend | None,
    verifier: Verifier | None,
    progress: bool,
    retry_failed: bool,
) -> SynthSummary:
    output = config.output
    images_dir = output / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    stages_path, metadata_path = output / STAGES_FILE, output / METADATA_FILE
    for path in (stages_path, metadata_path):
        _repair_tail(path)
        path.touch()
    # The journal is written first and holds each accepted row, so a sample is done once
    # it is journalled as accepted or rejected; an interruption between the two appends
    # is mended here. A journalled failure is not done: it is retried below.
    _restore_accepted_rows(stages_path, metadata_path)
    latest = _latest_records(stages_path)
    # A dataset row is never written twice, whatever the journal says.
    done = _recorded_ids(metadata_path)
    for sample_id, record in latest.items():
        if record.get("status") == "accepted":
            done.add(sample_id)
        elif not retry_failed and not _is_failure(record):
            done.add(sample_id)  # a final rejection
    pending = [sample for sample in samples if sample.id not in done]
    resumed = len(samples) - len(pending)
    retried = sum(1 for sample in pending if sample.id in latest)
    if resumed:
        logger.info("resuming: %d of %d samples already done", resumed, len(samples))
    if retried:
        logger.info("retrying %d samples that failed or were rejected before", retried)

    runner = _SampleRunner(config, teacher, target, verifier, images_dir)
    semaphore = asyncio.Semaphore(config.concurrency)

    async def guarded(sample: SourceSample) -> _Outcome:
        async with semaphore:
            return await runner.run(sample)

    bar = _progress_bar(progress, len(samples), resumed)
    tasks = [asyncio.create_task(guarded(sample)) for sample in pending]
    try:
        for next_done in asyncio.as_completed(tasks):
            outcome = await next_done
            _record(outcome, stages_path, metadata_path)
            if bar is not None:
                bar.advance()
    finally:
        for task in tasks:
            task.cancel()
        if bar is not None:
            bar.stop()

    _prune_images(output, read_metadata(output))
    summary = _summary_from_journal(output, resumed, len(pending), retried)
    (output / SUMMARY_FILE).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary


def _record(outcome: _Outcome, stages_path: Path, metadata_path: Path) -> None:
    """Journal the outcome, then add an accepted sample to the dataset (write-ahead).

    A failure is journalled too (its error and partial stages help diagnose the
    outage), but with status ``failed``, which a rerun does not count as done.
    """
    sample = outcome.sample
    record: dict[str, Any] = {
        "id": sample.id,
        "status": outcome.status,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "benign": sample.benign,
        "instruction": sample.instruction,
        "stages": outcome.stages,
        "row": outcome.row,
    }
    if outcome.error_type is not None:
        record.update(error=outcome.error_type, role=outcome.role)
    _append(stages_path, record)
    if outcome.row is not None:
        _append(metadata_path, outcome.row)


def _restore_accepted_rows(stages_path: Path, metadata_path: Path) -> None:
    """Append the dataset rows of journalled, accepted samples the dataset lacks."""
    present = _recorded_ids(metadata_path)
    for line in stages_path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        row = record.get("row")
        if record.get("status") == "accepted" and row and record["id"] not in present:
            _append(metadata_path, row)
            present.add(record["id"])


class _ProgressBar:
    def __init__(self, total: int, completed: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("synthesising"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task("synth", total=total, completed=completed)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def stop(self) -> None:
        self._progress.stop()


def _progress_bar(enabled: bool, total: int, completed: int) -> _ProgressBar | None:
    return _ProgressBar(total, completed) if enabled else None


def synthesize(
    config: SynthConfig,
    *,
    teacher: Backend | None = None,
    target: Backend | None = None,
    judge: Backend | None = None,
    progress: bool = False,
    retry_failed: bool = False,
) -> SynthSummary:
    """Blocking form of :func:`asynthesize`."""
    return asyncio.run(
        asynthesize(
            config,
            teacher=teacher,
            target=target,
            judge=judge,
            progress=progress,
            retry_failed=retry_failed,
        )
    )
