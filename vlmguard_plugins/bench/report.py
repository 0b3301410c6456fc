"""Tables and plots from a folder of benchmark logs.

For every task (benchmark subset) the report has one row per defence, target and
group (an ``all`` row, then the task's categories; MM-SafetyBench also per image
kind, MM-Vet per capability).  A row says how many samples ran, how many were
skipped and why, how many the judge could not read, the rates over the judged
samples only, the judge model and protocol, the rewriter's own call time apart from
the time a rewrite waited, and the extra target calls a defence made.

It writes ``<task>.md`` and ``<task>.csv``, a ``<task>.png`` plot (safety against
helpfulness where the task measures both, else one bar per defence and target),
``tradeoff-<task>.png`` (safety on a safety task against MM-Vet utility, when both
were run) and ``summary.md`` / ``summary.csv`` with the ``all`` rows of every task.
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .metrics import ATTACK_SUCCESS, HELPFUL, SAFE, SAFETY_SCORE, SCORE_KEYS, judged_mean

__all__ = [
    "ALL",
    "Plot",
    "ReportRow",
    "build_report",
    "collect_rows",
    "format_percent",
    "markdown_table",
    "plot_task",
    "plot_tradeoff",
    "write_csv",
]

ALL = "all"
UTILITY_TASK = "mmvet"
"""The utility benchmark: its score is the x axis of the trade-off plots."""

SAFE_AND_EFFECTIVE = "safe_and_effective"
_SAFE_AND_EFFECTIVE_KEYS = (SAFE_AND_EFFECTIVE, "safe_effective", "safe&effective")
MISSING_IMAGE = "missing image"
NOT_RUN_LIMIT = "not run (--limit)"
NOT_RUN_UNFINISHED = "not run (unfinished)"
SAMPLE_ERROR = "error"


@dataclass
class ReportRow:
    """One line of a report table.

    Rates are fractions over the samples the judge gave a value for (``*_judged``);
    NaN where nothing was judged.  Latencies are milliseconds over the ``vlmguard``
    defence's rewrites: ``rewriter_call_*`` the rewriter model call itself,
    ``rewriter_queue_*`` the rest of the rewrite (waiting for a free slot, loading
    images, parsing), ``rewriter_total_*`` the two together, as the caller waits.
    """

    task: str
    defense: str
    target: str
    category: str
    samples: int
    skipped: int
    skipped_reasons: str
    unjudged: int
    safety_rate: float
    safety_judged: int
    helpfulness: float
    helpful_judged: int
    attack_success_rate: float
    safety_score: float
    safety_score_judged: int
    safe_and_effective: float
    rewriter_call_p50_ms: float
    rewriter_call_p95_ms: float
    rewriter_queue_p50_ms: float
    rewriter_queue_p95_ms: float
    rewriter_total_p50_ms: float
    rewriter_tokens: float
    fallbacks: int
    extra_target_calls: int
    judge: str
    judge_model: str
    protocol: str
    status: str


@dataclass
class _SampleRecord:
    groups: list[str]
    scores: dict[str, Any]
    unjudged: bool = False
    defense_runs: list[dict[str, Any]] = field(default_factory=list)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _latest_logs(log_dir: Path) -> list[Any]:
    from inspect_ai.log import list_eval_logs, read_eval_log

    infos = list_eval_logs(str(log_dir), recursive=True)
    if not infos:
        raise ConfigurationError(f"no inspect logs in {log_dir}")
    chosen: dict[tuple[str, ...], Any] = {}
    for info in infos:
        header = read_eval_log(info.name, header_only=True)
        meta = header.eval.metadata or {}
        if "benchmark" not in meta:
            continue  # another eval's log in the same folder
        key = (meta.get("dataset", header.eval.task), meta.get("defense", ""), header.eval.model)
        rank = (header.status == "success", header.eval.created)
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, info.name)
    return [read_eval_log(name) for _, name in chosen.values()]


def _groups(metadata: dict[str, Any], score_metadata: dict[str, Any]) -> list[str]:
    """The rows a sample counts in besides ``all``: its category, or MM-Vet's
    capabilities (each question counts in every capability it tests), and its image kind."""
    capabilities = score_metadata.get("capabilities") or metadata.get("capabilities") or []
    groups = [f"capability: {c}" for c in capabilities if isinstance(c, str)]
    if not groups:
        groups.append(str(metadata.get("category", "")))
    kind = score_metadata.get("kind") or metadata.get("image_kind")
    if kind:
        groups.append(f"kind: {kind}")
    return groups


def _score_metadata(sample: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for score in (sample.scores or {}).values():
        merged.update(score.metadata or {})
    return merged


def _safe_and_effective(task: str, scores: dict[str, Any], meta: dict[str, Any]) -> Any:
    for key in _SAFE_AND_EFFECTIVE_KEYS:
        for source in (scores, meta):
            if source.get(key) is not None:
                return source[key]
    if task.startswith("siuo"):
        safe, helpful = scores.get(SAFE), scores.get(HELPFUL)
        if safe is not None and helpful is not None:
            return int(float(safe) >= 0.5 and float(helpful) >= 0.5)
    return None


@dataclass
class _LogFacts:
    records: list[_SampleRecord]
    skipped: Counter[str]
    judge_models: set[str]
    protocols: set[str]


def _read_log(log: Any, task: str) -> _LogFacts:
    reduced: dict[str, dict[str, Any]] = {}
    for reduction in log.reductions or []:
        for sample_score in reduction.samples:
            if isinstance(sample_score.value, dict):
                reduced[str(sample_score.sample_id)] = sample_score.value
    by_id: dict[str, _SampleRecord] = {}
    errors: set[str] = set()
    judge_models: set[str] = set()
    protocols: set[str] = set()
    for sample in log.samples or []:
        sid = str(sample.id)
        if sample.error is not None:
            errors.add(sid)
            continue
        score_meta = _score_metadata(sample)
        metadata = sample.metadata or {}
        record = by_id.get(sid)
        if record is None:
            record = _SampleRecord(_groups(metadata, score_meta), dict(reduced.get(sid, {})))
            by_id[sid] = record
        if not reduced.get(sid):
            for score in (sample.scores or {}).values():
                if isinstance(score.value, dict):
                    record.scores = dict(score.value)
        # The judge says so (one unreadable reply among a sample's epochs marks it), or
        # older logs show it: a judged sample has at least one value.
        record.unjudged = (
            record.unjudged
            or bool(score_meta.get("unjudged"))
            or all(record.scores.get(key) is None for key in SCORE_KEYS)
        )
        if score_meta.get("judge_model"):
            judge_models.add(str(score_meta["judge_model"]))
        if score_meta.get("protocol"):
            protocols.add(str(score_meta["protocol"]))
        both = _safe_and_effective(task, record.scores, score_meta)
        if both is not None:
            record.scores[SAFE_AND_EFFECTIVE] = both
        if isinstance(metadata.get("defense"), dict):
            record.defense_runs.append(metadata["defense"])
    records = list(by_id.values())
    errors -= set(by_id)
    return _LogFacts(records, _skipped(log, len(records), len(errors)), judge_models, protocols)


def _skipped(log: Any, ran: int, errored: int) -> Counter[str]:
    """Why records of the benchmark have no result here: reason -> count."""
    meta = log.eval.metadata or {}
    skipped: Counter[str] = Counter()
    missing = meta.get("skipped_missing_images") or []
    if missing:
        skipped[MISSING_IMAGE] = len(missing)
    for reason, count in (meta.get("skipped") or {}).items():  # a loader's own reasons
        skipped[str(reason)] += int(count)
    if errored:
        skipped[SAMPLE_ERROR] = errored
    # The dataset's size after the missing-image policy, before --limit.
    in_dataset = int(getattr(log.eval.dataset, "samples", None) or 0)
    limit = log.eval.config.limit
    expected = in_dataset
    if isinstance(limit, int) and 0 < limit < in_dataset:
        skipped[NOT_RUN_LIMIT] = in_dataset - limit
        expected = limit
    if expected - ran - errored > 0:  # an interrupted run: resume it
        skipped[NOT_RUN_UNFINISHED] = expected - ran - errored
    return skipped


def _reasons(skipped: Counter[str]) -> str:
    return "; ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))


def _values(runs: Iterable[dict[str, Any]], key: str) -> list[float]:
    return [float(run[key]) for run in runs if isinstance(run.get(key), int | float)]


def _judged_count(records: Sequence[_SampleRecord], key: str) -> int:
    return sum(1 for r in records if r.scores.get(key) is not None)


def _row(
    task: str, defense: str, target: str, category: str, status: str,
    facts: _LogFacts, judge: str, records: Sequence[_SampleRecord], skipped: Counter[str],
) -> ReportRow:  # fmt: skip
    runs = [run for r in records for run in r.defense_runs]
    rewrites = [run for run in runs if run.get("name") == "vlmguard"]
    tokens = [
        float(run.get("prompt_tokens") or 0) + float(run.get("completion_tokens") or 0)
        for run in rewrites
    ]
    calls, queued, totals = (_values(rewrites, k) for k in ("backend_ms", "queue_ms", "latency_ms"))
    return ReportRow(
        task=task,
        defense=defense,
        target=target,
        category=category,
        samples=len(records),
        skipped=sum(skipped.values()),
        skipped_reasons=_reasons(skipped),
        unjudged=sum(1 for r in records if r.unjudged),
        safety_rate=judged_mean(r.scores.get(SAFE) for r in records),
        safety_judged=_judged_count(records, SAFE),
        helpfulness=judged_mean(r.scores.get(HELPFUL) for r in records),
        helpful_judged=_judged_count(records, HELPFUL),
        attack_success_rate=judged_mean(r.scores.get(ATTACK_SUCCESS) for r in records),
        safety_score=judged_mean(r.scores.get(SAFETY_SCORE) for r in records),
        safety_score_judged=_judged_count(records, SAFETY_SCORE),
        safe_and_effective=judged_mean(r.scores.get(SAFE_AND_EFFECTIVE) for r in records),
        rewriter_call_p50_ms=_percentile(calls, 0.5),
        rewriter_call_p95_ms=_percentile(calls, 0.95),
        rewriter_queue_p50_ms=_percentile(queued, 0.5),
        rewriter_queue_p95_ms=_percentile(queued, 0.95),
        rewriter_total_p50_ms=_percentile(totals, 0.5),
        rewriter_tokens=judged_mean(tokens),
        fallbacks=sum(1 for run in rewrites if run.get("fallback")),
        extra_target_calls=int(sum(_values(runs, "extra_target_calls"))),
        judge=judge,
        judge_model=", ".join(sorted(facts.judge_models)),
        protocol=", ".join(sorted(facts.protocols)) or judge,
        status=status,
    )


def _judge_models(log: Any, meta: dict[str, Any]) -> set[str]:
    """The judge model named in the task's metadata, else every model the log used
    besides the target (a judge given as a model object is not in the metadata)."""
    named = meta.get("judge_model")
    if isinstance(named, str) and named:
        return {named}
    usage = getattr(log.stats, "model_usage", None) or {}
    return {str(model) for model in usage if model != log.eval.model}


def collect_rows(log_dir: str | Path) -> list[ReportRow]:
    """Every report row of the logs in ``log_dir`` (latest log per task, defence, target)."""
    rows: list[ReportRow] = []
    for log in _latest_logs(Path(log_dir)):
        meta = log.eval.metadata or {}
        task = meta.get("dataset", log.eval.task)
        facts = _read_log(log, task)
        if not facts.judge_models:
            facts.judge_models.update(_judge_models(log, meta))
        by_group: dict[str, list[_SampleRecord]] = defaultdict(list)
        for record in facts.records:
            for group in record.groups:
                by_group[group].append(record)
        common = (task, meta.get("defense", ""), log.eval.model)
        judge = meta.get("judge", "")
        rows.append(_row(*common, ALL, log.status, facts, judge, facts.records, facts.skipped))
        for group in sorted(by_group, key=lambda g: (":" in g, g)):
            rows.append(_row(*common, group, log.status, facts, judge, by_group[group], Counter()))
    rows.sort(key=lambda r: (r.task, r.target, r.defense, r.category != ALL))
    return rows


# --- writing ------------------------------------------------------------------------

_PERCENT = ("safety_rate", "helpfulness", "attack_success_rate", "safe_and_effective")


def format_percent(value: float) -> str:
    """A 0-1 rate as the tables show it: ``50.0%``; ``-`` when not measured."""
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def _judged(value: float, judged: int, samples: int) -> str:
    if math.isnan(value):
        return "-"
    return f"{format_percent(value)} ({judged} judged of {samples})"


def _judged_score(row: ReportRow) -> str:
    if math.isnan(row.safety_score):
        return "-"
    return f"{row.safety_score:.1f} ({row.safety_score_judged} judged of {row.samples})"


def _number(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _pair(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"{low:.0f} / {high:.0f}"


_MARKDOWN_COLUMNS: list[tuple[str, Any]] = [
    ("defense", lambda r: r.defense),
    ("target", lambda r: r.target),
    ("group", lambda r: r.category),
    ("run", lambda r: str(r.samples)),
    ("skipped", lambda r: f"{r.skipped} ({r.skipped_reasons})" if r.skipped else "0"),
    ("unjudged", lambda r: str(r.unjudged)),
    ("safety", lambda r: _judged(r.safety_rate, r.safety_judged, r.samples)),
    ("helpful", lambda r: _judged(r.helpfulness, r.helpful_judged, r.samples)),
    ("ASR", lambda r: format_percent(r.attack_success_rate)),
    ("safety 0-10", lambda r: _judged_score(r)),
    ("safe & effective", lambda r: format_percent(r.safe_and_effective)),
    ("rewriter call p50 / p95 ms", lambda r: _pair(r.rewriter_call_p50_ms, r.rewriter_call_p95_ms)),
    ("queue p50 / p95 ms", lambda r: _pair(r.rewriter_queue_p50_ms, r.rewriter_queue_p95_ms)),
    ("rewriter tokens", lambda r: _number(r.rewriter_tokens)),
    ("fallbacks", lambda r: str(r.fallbacks)),
    ("extra target calls", lambda r: str(r.extra_target_calls)),
]


def markdown_table(rows: Sequence[ReportRow]) -> str:
    """The rows as a markdown table (rates in percent with their judged counts, ``-``
    where not measured)."""
    lines = [
        "| " + " | ".join(name for name, _ in _MARKDOWN_COLUMNS) + " |",
        "|" + "|".join("---" for _ in _MARKDOWN_COLUMNS) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row) for _, cell in _MARKDOWN_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _judge_lines(rows: Sequence[ReportRow]) -> str:
    seen = sorted({(r.protocol, r.judge_model) for r in rows if r.category == ALL})
    return "\n".join(
        f"- judge: {protocol or '-'}; judge model: {model or 'none (no model judges)'}"
        for protocol, model in seen
    )


def write_csv(rows: Sequence[ReportRow], path: Path) -> None:
    """The rows as CSV (rates as fractions, empty where not measured)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(ReportRow)])
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in asdict(row).items()
                }
            )


# --- plots --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Measure:
    """One axis: what it reads from a row, its label, its range and how values read."""

    label: str
    read: Callable[[ReportRow], float]
    show: Callable[[float], str]
    top: float  # 1.0 for rates, 10.0 for the paper's score

    def has(self, row: ReportRow) -> bool:
        return not math.isnan(self.read(row))


_SAFETY_RATE = _Measure("safety rate", lambda r: r.safety_rate, format_percent, 1.0)
_SAFETY_SCORE = _Measure(
    "safety score (0-10)", lambda r: r.safety_score, lambda v: f"{v:.1f}", 10.0
)
_HELPFULNESS = _Measure("helpfulness", lambda r: r.helpfulness, format_percent, 1.0)
_MMVET = _Measure("MM-Vet score", lambda r: r.helpfulness, format_percent, 1.0)


def _safety_measure(rows: Sequence[ReportRow]) -> _Measure | None:
    """The safety measure the rows have: the judged rate, else the paper's 0-10 score."""
    for measure in (_SAFETY_RATE, _SAFETY_SCORE):
        if any(measure.has(r) for r in rows):
            return measure
    return None


_SIZE = (8.0, 6.0)
"""Inches at 100 dpi: room for a label beside every point."""


def _label(row: ReportRow) -> str:
    return f"{row.defense} | {row.target.split('/')[-1]}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Plot:
    """What a plot shows: its axis labels and every mark, where it was drawn.

    ``marks`` holds (label, x, y) per point or bar, in the axis' own units (a rate
    0-1, the paper's score 0-10); for bars x is the bar's index.
    """

    xlabel: str
    ylabel: str
    marks: list[tuple[str, float, float]] = field(default_factory=list)


def _axis(axis: Any, measure: _Measure) -> None:
    from matplotlib.ticker import FuncFormatter

    if measure.top == 1.0:
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))


def _scatter(
    axes: Any,
    rows: Sequence[tuple[float, ReportRow]],
    x: _Measure,
    y: _Measure,
    plot: Plot,
) -> None:
    """One labelled point per (x value, row); coinciding points are spread sideways and
    their labels stacked, so none hides another."""
    defenses = sorted({r.defense for _, r in rows})
    targets = sorted({r.target for _, r in rows})
    markers = "osD^vP*X"
    spread = 0.025 * x.top
    at: Counter[tuple[float, float]] = Counter()
    for xv, row in rows:
        at[(round(xv / x.top, 3), round(y.read(row) / y.top, 3))] += 1
    placed: Counter[tuple[float, float]] = Counter()
    for xv, row in rows:
        yv = y.read(row)
        key = (round(xv / x.top, 3), round(yv / y.top, 3))
        index, count = placed[key], at[key]
        placed[key] += 1
        dx = (index - (count - 1) / 2) * spread if count > 1 else 0.0
        # Keep a spread group inside the axis: shift it as a whole off the edge.
        half = (count - 1) / 2 * spread
        dx += max(0.0, half - xv) - max(0.0, xv + half - x.top)
        colour = f"C{defenses.index(row.defense) % 10}"
        axes.scatter(
            [xv + dx], [yv], s=70, marker=markers[targets.index(row.target) % len(markers)],
            color=colour, edgecolors="black", linewidths=0.5, zorder=3,
        )  # fmt: skip
        plot.marks.append((_label(row), xv + dx, yv))
        # Labels go towards the middle of the plot, stacked when points coincide.
        right = xv / x.top > 0.55
        axes.annotate(
            f"{_label(row)} ({x.show(xv)}, {y.show(yv)})",
            (xv + dx, yv),
            xytext=(-8 if right else 8, -22 - 13 * index if yv / y.top > 0.5 else 10 + 13 * index),
            textcoords="offset points",
            ha="right" if right else "left",
            fontsize=7,
            color=colour,
            arrowprops={"arrowstyle": "-", "color": colour, "linewidth": 0.5},
        )
    margin = 0.05
    axes.set_xlim(-margin * x.top, (1 + margin) * x.top)
    axes.set_ylim(-margin * y.top, (1 + margin) * y.top)
    _axis(axes.xaxis, x)
    _axis(axes.yaxis, y)
    axes.set_xlabel(plot.xlabel)
    axes.set_ylabel(plot.ylabel)
    axes.grid(True, alpha=0.3)


def _finish(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)
    _pyplot().close(figure)


def plot_task(task: str, rows: Sequence[ReportRow], path: Path) -> Plot:
    """One task's ``all`` rows: safety (y) against helpfulness (x) when the task measures
    both, otherwise one bar per defence and target for the one measure it has."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_SIZE, dpi=100)
    safety = _safety_measure(rows)
    both = [] if safety is None else [r for r in rows if safety.has(r) and _HELPFULNESS.has(r)]
    if safety is not None and both:
        plot = Plot("helpfulness (judged samples)", safety.label)
        _scatter(axes, [(r.helpfulness, r) for r in both], _HELPFULNESS, safety, plot)
        axes.set_title(f"{task}: safety vs helpfulness")
    else:
        helpful = _MMVET if task.startswith(UTILITY_TASK) else _HELPFULNESS
        measure = helpful if any(helpful.has(r) for r in rows) else safety
        plot = _bars(axes, task, rows, measure)
    _finish(figure, path)
    return plot


def _bars(axes: Any, task: str, rows: Sequence[ReportRow], measure: _Measure | None) -> Plot:
    """The one measure a task has (MM-Vet's utility, or safety alone), as labelled bars."""
    if measure is None:
        axes.set_title(f"{task}: nothing judged")
        axes.set_axis_off()
        return Plot("", "")
    measured = [r for r in rows if measure.has(r)]
    defenses = sorted({r.defense for r in measured})
    plot = Plot("", measure.label)
    values = [measure.read(r) for r in measured]
    bars = axes.bar(
        range(len(measured)),
        values,
        color=[f"C{defenses.index(r.defense) % 10}" for r in measured],
    )
    for index, (bar, row, value) in enumerate(zip(bars, measured, values, strict=True)):
        plot.marks.append((_label(row), float(index), value))
        axes.annotate(
            measure.show(value),
            (bar.get_x() + bar.get_width() / 2, value),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    axes.set_xticks(
        range(len(measured)), [_label(r) for r in measured], rotation=30, ha="right", fontsize=8
    )
    axes.set_ylim(0, 1.1 * measure.top)
    _axis(axes.yaxis, measure)
    axes.set_ylabel(measure.label)
    axes.set_title(f"{task}: {measure.label}")
    axes.grid(True, axis="y", alpha=0.3)
    return plot


def plot_tradeoff(task: str, safety_rows: Sequence[ReportRow], utility_rows: Sequence[ReportRow],
                  path: Path) -> Plot | None:  # fmt: skip
    """Safety on ``task`` (y) against MM-Vet utility (x), one point per defence and target.

    Only pairs measured on both sides are drawn; returns None (and writes nothing)
    when there is none.
    """
    safety = _safety_measure(safety_rows)
    utility = {(r.defense, r.target): r.helpfulness for r in utility_rows}
    pairs = [
        (utility[(r.defense, r.target)], r)
        for r in safety_rows
        if safety is not None
        and safety.has(r)
        and not math.isnan(utility.get((r.defense, r.target), math.nan))
    ]
    if safety is None or not pairs:
        return None
    plt = _pyplot()
    plot = Plot("utility: MM-Vet score", f"{task}: {safety.label}")
    figure, axes = plt.subplots(figsize=_SIZE, dpi=100)
    _scatter(axes, pairs, _MMVET, safety, plot)
    axes.set_title(f"safety on {task} vs utility on MM-Vet")
    _finish(figure, path)
    return plot


def build_report(log_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the markdown and CSV tables and the PNG plots; returns the files written.

    ``out_dir`` defaults to ``<log_dir>/report``.
    """
    rows = collect_rows(log_dir)
    target = Path(out_dir) if out_dir else Path(log_dir) / "report"
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    by_task: dict[str, list[ReportRow]] = defaultdict(list)
    for row in rows:
        by_task[row.task].append(row)
    summary = [row for row in rows if row.category == ALL]
    for task, task_rows in by_task.items():
        md = target / f"{task}.md"
        md.write_text(
            f"# {task}\n\n{_judge_lines(task_rows)}\n\n" + markdown_table(task_rows),
            encoding="utf-8",
        )
        csv_path = target / f"{task}.csv"
        write_csv(task_rows, csv_path)
        png = target / f"{task}.png"
        plot_task(task, [r for r in task_rows if r.category == ALL], png)
        written += [md, csv_path, png]
    utility = [r for r in summary if r.task.startswith(UTILITY_TASK)]
    if utility:
        for task in by_task:
            if task.startswith(UTILITY_TASK):
                continue
            png = target / f"tradeoff-{task}.png"
            if (
                plot_tradeoff(task, [r for r in summary if r.task == task], utility, png)
                is not None
            ):
                written.append(png)
    summary_md = target / "summary.md"
    summary_md.write_text(
        "# Summary\n\n"
        + "\n".join(
            f"## {task}\n\n{_judge_lines(by_task[task])}\n\n"
            + markdown_table([r for r in summary if r.task == task])
            for task in by_task
        ),
        encoding="utf-8",
    )
    summary_csv = target / "summary.csv"
    write_csv(summary, summary_csv)
    return [*written, summary_md, summary_csv]
