"""Tables and plots from a folder of benchmark logs.

For every task (benchmark subset) the report has one row per defence, target and
category (plus an ``all`` row): samples, safety rate, helpfulness (or SIUO's
effectiveness, or MM-Vet's score), attack success rate, the paper judge's mean
safety score, and the rewriter's mean and p95 latency, mean tokens and fallbacks.
It writes ``<task>.md`` and ``<task>.csv``, a ``<task>.png`` safety-versus-helpfulness
plot, and ``summary.md`` / ``summary.csv`` with the ``all`` rows of every task.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .metrics import ATTACK_SUCCESS, HELPFUL, SAFE, SAFETY_SCORE, judged_mean

ALL = "all"


@dataclass
class ReportRow:
    """One line of a report table."""

    task: str
    defense: str
    target: str
    category: str
    samples: int
    safety_rate: float
    helpfulness: float
    attack_success_rate: float
    safety_score: float
    rewriter_latency_ms: float
    rewriter_latency_p95_ms: float
    rewriter_tokens: float
    fallbacks: int
    judge: str
    status: str


@dataclass
class _SampleRecord:
    category: str
    scores: dict[str, Any]
    defense_runs: list[dict[str, Any]]


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


def _records(log: Any) -> list[_SampleRecord]:
    reduced: dict[str, dict[str, Any]] = {}
    for reduction in log.reductions or []:
        for sample_score in reduction.samples:
            if isinstance(sample_score.value, dict):
                reduced[str(sample_score.sample_id)] = sample_score.value
    by_id: dict[str, _SampleRecord] = {}
    for sample in log.samples or []:
        sid = str(sample.id)
        record = by_id.setdefault(
            sid,
            _SampleRecord(str(sample.metadata.get("category", "")), reduced.get(sid, {}), []),
        )
        if not record.scores:
            for score in (sample.scores or {}).values():
                if isinstance(score.value, dict):
                    record.scores = score.value
        if isinstance(sample.metadata.get("defense"), dict):
            record.defense_runs.append(sample.metadata["defense"])
    return list(by_id.values())


def _row(
    task: str, defense: str, target: str, category: str, judge: str, status: str,
    records: Iterable[_SampleRecord],
) -> ReportRow:  # fmt: skip
    records = list(records)
    runs = [run for r in records for run in r.defense_runs if run.get("name") == "vlmguard"]
    latencies = [float(run["latency_ms"]) for run in runs]
    tokens = [float(run["prompt_tokens"]) + float(run["completion_tokens"]) for run in runs]
    return ReportRow(
        task=task,
        defense=defense,
        target=target,
        category=category,
        samples=len(records),
        safety_rate=judged_mean(r.scores.get(SAFE) for r in records),
        helpfulness=judged_mean(r.scores.get(HELPFUL) for r in records),
        attack_success_rate=judged_mean(r.scores.get(ATTACK_SUCCESS) for r in records),
        safety_score=judged_mean(r.scores.get(SAFETY_SCORE) for r in records),
        rewriter_latency_ms=judged_mean(latencies),
        rewriter_latency_p95_ms=_percentile(latencies, 0.95),
        rewriter_tokens=judged_mean(tokens),
        fallbacks=sum(1 for run in runs if run.get("fallback")),
        judge=judge,
        status=status,
    )


def collect_rows(log_dir: str | Path) -> list[ReportRow]:
    """Every report row of the logs in ``log_dir`` (latest log per task, defence, target)."""
    rows: list[ReportRow] = []
    for log in _latest_logs(Path(log_dir)):
        meta = log.eval.metadata or {}
        task = meta.get("dataset", log.eval.task)
        defense = meta.get("defense", "")
        judge = meta.get("judge", "")
        target = log.eval.model
        records = _records(log)
        by_category: dict[str, list[_SampleRecord]] = defaultdict(list)
        for record in records:
            by_category[record.category].append(record)
        common = (task, defense, target)
        rows.append(_row(*common, ALL, judge, log.status, records))
        for category in sorted(by_category):
            rows.append(_row(*common, category, judge, log.status, by_category[category]))
    rows.sort(key=lambda r: (r.task, r.target, r.defense, r.category != ALL, r.category))
    return rows


# --- writing ------------------------------------------------------------------------

_PERCENT = ("safety_rate", "helpfulness", "attack_success_rate")
_COLUMNS = [f.name for f in fields(ReportRow)]
_HEADERS = {
    "safety_rate": "safety %",
    "helpfulness": "helpful %",
    "attack_success_rate": "ASR %",
    "safety_score": "safety 0-10",
    "rewriter_latency_ms": "rewriter ms",
    "rewriter_latency_p95_ms": "rewriter p95 ms",
    "rewriter_tokens": "rewriter tokens",
}


def _cell(name: str, value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if name in _PERCENT:
            return f"{100 * value:.1f}"
        return f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[ReportRow]) -> str:
    """The rows as a markdown table (rates in percent, ``-`` where not measured)."""
    shown = [c for c in _COLUMNS if c not in ("task", "judge", "status")]
    lines = [
        "| " + " | ".join(_HEADERS.get(c, c) for c in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for row in rows:
        values = asdict(row)
        lines.append("| " + " | ".join(_cell(c, values[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[ReportRow], path: Path) -> None:
    """The rows as CSV (rates as fractions, empty where not measured)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: ("" if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in asdict(row).items()
                }
            )


def _axis_value(row: ReportRow) -> tuple[float, float, str]:
    """(helpfulness, safety, safety label) for the plot; the paper score is scaled to 0-1."""
    if not math.isnan(row.safety_rate):
        return row.helpfulness, row.safety_rate, "safety rate"
    return row.helpfulness, row.safety_score / 10, "safety score / 10"


def plot_task(task: str, rows: Sequence[ReportRow], path: Path) -> None:
    """Safety (y) against helpfulness (x): colour per defence, marker per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    defenses = sorted({r.defense for r in rows})
    targets = sorted({r.target for r in rows})
    markers = "osD^vP*X"
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    labels = set()
    for row in rows:
        helpful, safety, label = _axis_value(row)
        labels.add(label)
        # A metric the judge does not give is drawn at 0 with a hollow marker.
        hollow = math.isnan(helpful) or math.isnan(safety)
        x = 0.0 if math.isnan(helpful) else helpful
        y = 0.0 if math.isnan(safety) else safety
        colour = f"C{defenses.index(row.defense) % 10}"
        axes.scatter(
            [x],
            [y],
            s=70,
            marker=markers[targets.index(row.target) % len(markers)],
            facecolors="none" if hollow else colour,
            edgecolors=colour,
            label=f"{row.defense} | {row.target.split('/')[-1]} ({_cell('h', x)}, {_cell('s', y)})",
            zorder=3,
        )
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlabel("helpfulness")
    axes.set_ylabel(" / ".join(sorted(labels)) or "safety")
    axes.set_title(f"{task}: safety vs helpfulness")
    axes.grid(True, alpha=0.3)
    if rows:
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


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
        judges = sorted({r.judge for r in task_rows})
        md.write_text(
            f"# {task}\n\njudge: {', '.join(judges)}\n\n" + markdown_table(task_rows),
            encoding="utf-8",
        )
        csv_path = target / f"{task}.csv"
        write_csv(task_rows, csv_path)
        png = target / f"{task}.png"
        plot_task(task, [r for r in task_rows if r.category == ALL], png)
        written += [md, csv_path, png]
    summary_md = target / "summary.md"
    summary_md.write_text(
        "# Summary\n\n"
        + "\n".join(
            f"## {task}\n\n" + markdown_table([r for r in summary if r.task == task])
            for task in by_task
        ),
        encoding="utf-8",
    )
    summary_csv = target / "summary.csv"
    write_csv(summary, summary_csv)
    return [*written, summary_md, summary_csv]
