"""The report files of an evaluation: one renderer per format (`REPORT_FORMATS`: report.md, report.json,
report.csv; each renders one dataset's evaluation and the summary of a protocol over several), the
per-image `scores.csv` and the figures (`write_report`, `write_summary`). The formats are described in
`siad.evaluate`'s docstring.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from siad import __version__
from siad.evaluation.metrics import METRICS, PIXEL, metric_names
from siad.evaluation.protocols import uzad_protocol
from siad.evaluation.results import ANSWER_SYMBOL, MAP_SYMBOL, PASSES, SCORE_SYMBOL, AnswerStats, DatasetEvaluation
from siad.visualize import plot_histograms, plot_qualitative, plot_roc  # matplotlib is imported when they draw

CSV_COLUMNS: tuple[str, ...] = ("dataset", "class", "pass", "shots", "seed", "n_images", "n_normal", "n_anomalous",
                                *metric_names(), "answer_accuracy", "answer_agreement", "answers_neither")
SCORE_COLUMNS: tuple[str, ...] = ("path", "class", "defect_type", "label", "score_pass1", "score_pass2",
                                  "answer_pass1", "answer_pass2")


# ------------------------------------------------------------------------------------ shared pieces
def pct(value: float | None) -> str:
    """A fraction in percent with one decimal; "-" where undefined."""
    return "-" if value is None else f"{100.0 * value:.1f}"


def mode_title(evaluation: DatasetEvaluation) -> str:
    """"zero-shot", "4-shot (seed 1)" or "4-shot (mean over seeds 0, 1, 2)"."""
    e = evaluation
    if not e.shots:
        return "zero-shot"
    if e.per_seed:
        return f"{e.shots}-shot (mean over seeds {', '.join(str(s.seed) for s in e.per_seed)})"
    return f"{e.shots}-shot (seed {e.seed})"


def seed_folder(seed: int | None) -> str:
    """The folder of one seed's report inside a few-shot report's folder."""
    return f"seed_{seed}"


def safe_name(name: str) -> str:
    """A class name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _summary_passes(evaluations: Sequence[DatasetEvaluation]) -> tuple[str, ...]:
    return PASSES if any(len(e.passes) == 2 for e in evaluations) else PASSES[:1]


# ------------------------------------------------------------------------------------ report.md
def _table_header(passes: tuple[str, ...], chat: bool, first: list[str]) -> list[str]:
    header = list(first)
    for p in passes:
        for m in METRICS:
            header.append(f"{m.title} ({MAP_SYMBOL[p] if m.level == PIXEL else SCORE_SYMBOL[p]})")
    if chat:
        header += [f"acc. ({ANSWER_SYMBOL[p]})" for p in passes]
        header += [f"agree ({ANSWER_SYMBOL[p]})" for p in passes]
    return header


def _table_cells(metrics: Mapping[str, Mapping[str, float | None]], answers: Mapping[str, Any],
                 passes: tuple[str, ...], chat: bool) -> list[str]:
    cells = [pct(metrics[p][m.name]) for p in passes for m in METRICS]
    if chat:
        for key in ("accuracy", "agreement"):
            for p in passes:
                stats = answers.get(p)
                cells.append(pct(getattr(stats, key) if isinstance(stats, AnswerStats) else (stats or {}).get(key)))
    return cells


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _gain_line(mean: Mapping[str, Mapping[str, float | None]], passes: tuple[str, ...]) -> str | None:
    if len(passes) < 2:
        return None
    parts = []
    for m in METRICS:
        a, b = mean["pass1"][m.name], mean["pass2"][m.name]
        if a is not None and b is not None:
            parts.append(f"{m.title} {100.0 * (b - a):+.1f}")
    return "Gain of self-improvement (pass 2 - pass 1, mean, points): " + (", ".join(parts) if parts else "-")


def markdown_report(evaluation: DatasetEvaluation, command: str, plots: bool = True) -> str:
    """The text of report.md (`plots`: whether the plot files are written beside it)."""
    e = evaluation
    lines = [f"# Evaluation: {e.dataset} ({e.settings['split']}) with {e.model}, {mode_title(e)}", "",
             f"Command: `{command}`", "",
             "Pass 1: S, M (and R); pass 2 (self-improvement): S', M' (and R'). Values in percent; '-': undefined.",
             ""]
    header = _table_header(e.passes, e.chat, ["class", "images"])
    rows = [[c.name, str(c.n_images), *_table_cells(c.metrics, c.answers, e.passes, e.chat)] for c in e.classes]
    rows.append(["**mean**", str(e.n_images), *_table_cells(e.mean, e.mean_answers, e.passes, e.chat)])
    lines += _markdown_table(header, rows) + [""]
    if e.per_seed:
        lines += ["Per seed (mean over classes; seed_<seed>/report.md has each seed's classes):", ""]
        seed_rows = [[f"seed {s.seed}", str(s.n_images), *_table_cells(s.mean, s.mean_answers, e.passes, e.chat)]
                     for s in e.per_seed]
        seed_rows.append(["**mean over seeds**", str(e.n_images),
                          *_table_cells(e.mean, e.mean_answers, e.passes, e.chat)])
        lines += _markdown_table(_table_header(e.passes, e.chat, ["seed", "images"]), seed_rows) + [""]
    gain = _gain_line(e.mean, e.passes)
    if gain:
        lines += [gain, ""]
    if e.chat:
        neither = ", ".join(f"{e.mean_answers[p]['neither']} ({ANSWER_SYMBOL[p]})" for p in e.passes
                            if p in e.mean_answers)
        over = " over all seeds" if e.per_seed else ""
        lines += [f"Answers that say neither yes nor no (counted as wrong){over}: {neither}.", ""]
    lines += ["Notes:", ""] + [f"- {note}" for note in e.notes] + [""]
    if e.per_seed:
        files = "report.json (every number, as fractions), report.csv; seed_<seed>/ (each seed's report)"
        count = f"{e.n_images} images x {len(e.per_seed)} seeds"
    else:
        files = "report.json (every number, as fractions), report.csv, scores.csv"
        if plots:
            files += ", roc_<class>.png, histograms.png" + (", qualitative.png" if e.qualitative else "")
        count = f"{len(e.records)} images"
    where = f" on {e.processes} processes" if e.processes > 1 else ""
    lines += [f"{count} in {e.seconds:.1f} s{where}. Files: {files}.", ""]
    return "\n".join(lines)


def markdown_summary(evaluations: Sequence[DatasetEvaluation], command: str) -> str:
    """The text of a protocol's report.md: the mean row of every dataset."""
    chat = any(e.chat for e in evaluations)
    passes = _summary_passes(evaluations)
    rows = []
    for e in evaluations:
        mean = {p: e.mean.get(p, {m.name: None for m in METRICS}) for p in passes}
        rows.append([e.dataset, e.model, str(e.n_images), *_table_cells(mean, e.mean_answers, passes, chat)])
    lines = [f"# Evaluation: UZAD cross-dataset protocol, {mode_title(evaluations[0])}", "", f"Command: `{command}`", "",
             "Mean over the classes of each test dataset; each dataset is evaluated with the checkpoint trained on "
             "its source dataset. Values in percent; '-': undefined. Per-dataset reports: `<dataset>/report.md`.", ""]
    lines += _markdown_table(_table_header(passes, chat, ["dataset", "model", "images"]), rows) + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ report.json
def report_dict(evaluation: DatasetEvaluation, command: str) -> dict[str, Any]:
    """The content of report.json."""
    e = evaluation
    return {
        "command": command,
        "siad_version": __version__,
        "model": e.model,
        "dataset": e.dataset,
        "root": e.root,
        "split": e.settings["split"],
        "passes": list(e.passes),
        "metrics": list(metric_names()),
        "settings": e.settings,
        "classes": {c.name: {"n_images": c.n_images, "n_normal": c.n_normal, "n_anomalous": c.n_anomalous,
                             "has_masks": c.has_masks, **{p: c.metrics[p] for p in e.passes},
                             "answers": {p: s.as_dict() for p, s in c.answers.items()}}
                    for c in e.classes},
        "mean": {"n_images": e.n_images, **{p: e.mean[p] for p in e.passes}, "answers": e.mean_answers},
        "shots": e.shots,
        **({"seed": e.seed, "references": e.references} if e.shots and not e.per_seed else {}),
        **({"seeds": {str(s.seed): {"report": f"{seed_folder(s.seed)}/report.json",
                                    "mean": {p: s.mean[p] for p in e.passes}, "answers": s.mean_answers,
                                    "references": s.references} for s in e.per_seed}} if e.per_seed else {}),
        "notes": e.notes,
        "seconds": e.seconds,
        "processes": e.processes,
    }


def summary_dict(evaluations: Sequence[DatasetEvaluation], command: str) -> dict[str, Any]:
    """The content of a protocol's report.json."""
    return {"command": command, "protocol": "uzad", "mapping": uzad_protocol(),
            "shots": evaluations[0].shots,
            "datasets": {e.dataset: {"model": e.model, "root": e.root, "report": f"{e.dataset}/report.json",
                                     "passes": list(e.passes), "n_images": e.n_images,
                                     **{p: e.mean[p] for p in e.passes}, "answers": e.mean_answers}
                         for e in evaluations}}


# ------------------------------------------------------------------------------------ report.csv
def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def csv_rows(evaluation: DatasetEvaluation) -> list[dict[str, str]]:
    """The rows of report.csv (see `siad.evaluate`'s docstring)."""
    e = evaluation
    rows = [row for one in e.per_seed for row in csv_rows(one)]  # few-shot: each seed's rows, then the mean
    seed = "mean" if e.per_seed else ("" if e.seed is None else e.seed)
    entries = [(c.name, c.n_images, c.n_normal, c.n_anomalous, c.metrics,
                {p: s.as_dict() for p, s in c.answers.items()}) for c in e.classes]
    entries.append(("mean", e.n_images, sum(c.n_normal for c in e.classes),
                    sum(c.n_anomalous for c in e.classes), e.mean, e.mean_answers))
    for name, n, n_normal, n_anomalous, metrics, answers in entries:
        for p in e.passes:
            row = {"dataset": e.dataset, "class": name, "pass": p, "shots": e.shots, "seed": seed, "n_images": n,
                   "n_normal": n_normal, "n_anomalous": n_anomalous, **{m: metrics[p][m] for m in metric_names()},
                   "answer_accuracy": answers.get(p, {}).get("accuracy"),
                   "answer_agreement": answers.get(p, {}).get("agreement"),
                   "answers_neither": answers.get(p, {}).get("neither")}
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A CSV file's text (the csv module's dialect: "\\r\\n" line ends)."""
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()


# ------------------------------------------------------------------------------------ the formats
@dataclass(frozen=True)
class ReportFormat:
    """One report file: its name, its text for one dataset's evaluation (`render(evaluation, command,
    plots)`) and for a protocol's summary over datasets (`render_summary(evaluations, command)`)."""

    filename: str
    render: Callable[[DatasetEvaluation, str, bool], str]
    render_summary: Callable[[Sequence[DatasetEvaluation], str], str]


REPORT_FORMATS: tuple[ReportFormat, ...] = (
    ReportFormat("report.md", markdown_report, markdown_summary),
    ReportFormat("report.json", lambda e, command, plots: json.dumps(report_dict(e, command), indent=2) + "\n",
                 lambda es, command: json.dumps(summary_dict(es, command), indent=2) + "\n"),
    ReportFormat("report.csv", lambda e, command, plots: csv_text(CSV_COLUMNS, csv_rows(e)),
                 lambda es, command: csv_text(CSV_COLUMNS, [r for e in es for r in csv_rows(e) if r["class"] == "mean"])),
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


# ------------------------------------------------------------------------------------ writing
def write_report(evaluation: DatasetEvaluation, out: Path, command: str, plots: bool = True) -> list[Path]:
    """Write report.md/.json/.csv, scores.csv and the plots into `out` (created). Returns the paths.
    A few-shot mean over seeds (`combine_seeds`) writes each seed's report into `out/seed_<seed>/`
    and the mean's report.md/.json/.csv into `out`."""
    e = evaluation
    out.mkdir(parents=True, exist_ok=True)
    written = [path for one in e.per_seed for path in write_report(one, out / seed_folder(one.seed), command, plots)]
    written += [_write(out / f.filename, f.render(e, command, plots)) for f in REPORT_FORMATS]
    if e.per_seed:
        return written
    score_rows = [{"path": r.path, "class": r.class_name, "defect_type": r.defect_type, "label": r.label,
                   **{f"score_{p}": r.scores.get(p) for p in PASSES}, **{f"answer_{p}": r.answers.get(p) for p in PASSES}}
                  for r in e.records]
    written.append(_write(out / "scores.csv", csv_text(SCORE_COLUMNS, [{k: _cell(v) for k, v in row.items()}
                                                                       for row in score_rows])))
    if plots:
        written += write_figures(e, out)
    return written


def write_figures(evaluation: DatasetEvaluation, out: Path) -> list[Path]:
    """roc_<class>.png (each pass's image-level ROC), histograms.png and, with rows, qualitative.png."""
    e = evaluation
    written = []
    for c in e.classes:
        group = [r for r in e.records if r.class_name == c.name]
        labels = [r.label for r in group]
        curves = {f"pass {p[-1]} ({SCORE_SYMBOL[p]})": (labels, [r.scores[p] for r in group]) for p in e.passes}
        written.append(plot_roc(out / f"roc_{safe_name(c.name)}.png", f"{e.dataset} / {c.name}", curves))
    labels = [r.label for r in e.records]
    groups = {f"pass {p[-1]} ({SCORE_SYMBOL[p]})": (labels, [r.scores[p] for r in e.records]) for p in e.passes}
    written.append(plot_histograms(out / "histograms.png", groups))
    if e.qualitative:
        written.append(plot_qualitative(out / "qualitative.png", e.qualitative))
    return written


def write_summary(evaluations: list[DatasetEvaluation], out: Path, command: str) -> list[Path]:
    """The protocol summary in `out`: report.md/.json/.csv with the mean row of every dataset."""
    out.mkdir(parents=True, exist_ok=True)
    return [_write(out / f.filename, f.render_summary(evaluations, command)) for f in REPORT_FORMATS]
