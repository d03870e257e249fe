"""A self-contained HTML report of a study: the library call behind ``tuner report``.

Figures come from ``optuna.visualization`` wherever it draws them; only the trial-state counts, the
top-trials table and the final-model section are our own. plotly.js is embedded once, so the file
opens with no network. Optuna draws an empty figure (and logs a warning) when a plot has no data;
we check the data first and write a sentence instead, so a reader never sees a blank plot.
"""

from __future__ import annotations

import html
import json
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import optuna.visualization as vis
import plotly.graph_objects as go
import plotly.offline
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from tuner.curves import ACCURACY_OVER_TIME, ACCURACY_PER_EPOCH, accuracy_over_time_figure, accuracy_per_epoch_figure
from tuner.errors import ConfigError
from tuner.exportmeta import METADATA_FILE, ExportRecord, FinalModelFigures, finite_number
from tuner.pareto import pareto_trials
from tuner.provenance import StudyProvenance
from tuner.records import BASELINE_ATTR, BEST_EPOCH_ATTR, EPOCHS_TRAINED_ATTR, N_PARAMS_ATTR, TRAIN_SECONDS_ATTR, VAL_ACCURACY_ATTR
from tuner.storage import load_study
from tuner.storageurl import describe_storage
from tuner.studyfile import NETWORK_SIZE_PARAMETERS
from tuner.swap import write_text_atomically
from tuner.text import format_value
from tuner.trials import best_by_value, ranked_by_value, state_counts

__all__ = ["ReportResult", "build_report", "TOP_TRIALS", "CONTOUR_PARAMS"]

TOP_TRIALS = 10
CONTOUR_PARAMS = ("learning_rate", NETWORK_SIZE_PARAMETERS["mlp"][1])  # an MLP study's; a CNN's has its filters
OBJECTIVE_NAME = "validation loss"
CURVES_TITLE = "Best validation loss so far, per epoch (what the pruner compares)"
_USER_ATTR_COLUMNS = (
    (VAL_ACCURACY_ATTR, "val acc"),
    (BEST_EPOCH_ATTR, "best epoch"),
    (EPOCHS_TRAINED_ATTR, "epochs run"),
    (N_PARAMS_ATTR, "weights"),
    (TRAIN_SECONDS_ATTR, "seconds"),
)
_STATE_COLORS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#1f77b4", "WAITING": "#7f7f7f"}


@dataclass(frozen=True)
class ReportResult:
    path: Path
    study_name: str
    storage: str
    counts: dict[str, int]
    figures: tuple[str, ...]  # titles of the sections drawn as plotly figures
    notes: tuple[str, ...]  # "section: why it is not drawn (or what to keep in mind)"
    has_export: bool
    test_accuracy: float | None
    size_bytes: int

    @property
    def n_trials(self) -> int:
        return sum(self.counts.values())

    @property
    def counts_text(self) -> str:
        """Like "3 complete, 9 pruned, 1 failed"."""
        return _counts_text(self.counts)


@dataclass(frozen=True)
class _Section:
    title: str
    figure: go.Figure | None = None
    html: str | None = None
    note: str | None = None


def build_report(*, storage_url: str, study_name: str | None = None, out: str | Path) -> ReportResult:
    """Write one self-contained HTML file describing a study.

    Args:
        storage_url: SQLAlchemy URL of the study database.
        study_name: the study; None for the storage's only study.
        out: the HTML file to write (replaced atomically).

    Returns a ``ReportResult``; raises ``StudyNotFoundError``, ``StorageError`` or ``ConfigError``.

    Example::

        result = build_report(storage_url="sqlite:///tuner.db", out="report.html")
        print(result.counts_text, result.path)
    """
    study = load_study(storage_url=storage_url, study_name=study_name)
    if len(study.directions) != 1:
        raise ConfigError(
            f"study {study.study_name!r} has {len(study.directions)} objectives;"
            " the report draws single-objective studies like those of 'tuner run'"
        )
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    export = _ExportView.from_study(study)

    sections = _search_sections(study, trials, complete) + export.sections()
    page = _page(study, storage_url, counts, complete, sections)
    path = Path(out).expanduser().resolve()
    _write_page(path, page)
    return ReportResult(
        path=path,
        study_name=study.study_name,
        storage=describe_storage(storage_url),
        counts=counts,
        figures=tuple(s.title for s in sections if s.figure is not None),
        notes=tuple(f"{s.title}: {s.note}" for s in sections if s.note),
        has_export=export.found,
        test_accuracy=export.test_accuracy,
        size_bytes=path.stat().st_size,
    )


def _search_sections(study: optuna.Study, trials: list[FrozenTrial], complete: list[FrozenTrial]) -> list[_Section]:
    if not trials:
        return [_Section("Trials", note="the study holds no trial yet; run 'tuner run' and build the report again")]
    sections = [_Section("Trials by state", figure=_state_counts_figure(trials))]
    # Optuna leaves failed trials out of this plot.
    with_curves = [t for t in trials if t.intermediate_values and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)]
    if with_curves:
        sections.append(_plot(CURVES_TITLE, vis.plot_intermediate_values, study, y_title=OBJECTIVE_NAME))
    else:
        sections.append(_Section(CURVES_TITLE, note="no completed, pruned or running trial has reported an epoch yet"))

    for title, draw in ((ACCURACY_PER_EPOCH, accuracy_per_epoch_figure), (ACCURACY_OVER_TIME, accuracy_over_time_figure)):
        figure = draw(trials)
        sections.append(_Section(title, figure=figure) if figure is not None else _Section(title, note="no trial has logged an epoch yet"))

    if not complete:
        summary = _counts_text(_nonzero(trials))
        sections.append(
            _Section(
                "Search results",
                note=f"no completed trial yet ({summary}); the history, importance, parameter and top-trial views need at least one",
            )
        )
        return sections

    sections.append(_plot("Optimization history (best so far)", vis.plot_optimization_history, study, target_name=OBJECTIVE_NAME))
    if len(complete) >= 2:
        sections.append(_plot("Parameter importances", vis.plot_param_importances, study))
    else:
        sections.append(_Section("Parameter importances", note="needs at least two completed trials"))
    sections.append(_plot("Parallel coordinates", vis.plot_parallel_coordinate, study, target_name=OBJECTIVE_NAME))
    sections.append(_plot("Slice plots", vis.plot_slice, study, target_name=OBJECTIVE_NAME))
    sections.append(_contour_section(study, complete))
    sections.append(_pareto_section(study, complete))
    sections.append(_Section(f"Top {min(TOP_TRIALS, len(complete))} trials", html=_top_trials_table(study, complete)))
    return sections


def _plot(title: str, plot_function: Any, study: optuna.Study, *, y_title: str | None = None, **kwargs: Any) -> _Section:
    # Optuna's warnings about small samples are worth showing next to the figure, not in a terminal.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = plot_function(study, **kwargs)
    if y_title:
        figure.update_yaxes(title_text=y_title)
    figure.update_layout(title=None, margin={"t": 30})
    notes = sorted({str(w.message) for w in caught if not issubclass(w.category, optuna.exceptions.ExperimentalWarning)})
    return _Section(title, figure=figure, note=" ".join(notes) or None)


def _contour_section(study: optuna.Study, complete: list[FrozenTrial]) -> _Section:
    provenance = StudyProvenance.from_study(study)
    family = provenance.family if provenance else "mlp"
    params = (CONTOUR_PARAMS[0], NETWORK_SIZE_PARAMETERS[family][1])
    title = f"Contour: {params[0]} vs {params[1]}"
    both = [t for t in complete if all(p in t.params for p in params)]
    distinct = {p: len({t.params[p] for t in both}) for p in params}
    if len(both) < 2 or min(distinct.values()) < 2:
        having = "with hidden layers and" if family == "mlp" else "with"  # an MLP without hidden layers has no units
        return _Section(
            title,
            note=f"needs two completed trials {having} different values of both parameters ({len(both)} completed trials have both)",
        )
    return _plot(title, vis.plot_contour, study, params=list(params), target_name=OBJECTIVE_NAME)


def _pareto_section(study: optuna.Study, complete: list[FrozenTrial]) -> _Section:
    """Validation loss against parameter count; the front is computed by tuner.pareto (our own figure:
    optuna's plot_pareto_front needs a multi-objective study, and ours stays single-objective)."""
    title = "Accuracy against cost: validation loss vs parameters"
    sized = [t for t in complete if t.user_attrs.get(N_PARAMS_ATTR)]
    if len(sized) < 2:
        return _Section(title, note="needs two completed trials with a parameter count")
    front = {p.number for p in pareto_trials(study, objectives=("val_loss", "params"))}
    figure = go.Figure()
    for on_front, name, color in ((False, "other trials", "#b0b0b0"), (True, "Pareto front", "#d62728")):
        points = sorted((t for t in sized if (t.number in front) == on_front), key=lambda t: t.user_attrs[N_PARAMS_ATTR])
        figure.add_trace(
            go.Scatter(
                x=[t.user_attrs[N_PARAMS_ATTR] for t in points],
                y=[t.value for t in points],
                mode="lines+markers" if on_front else "markers",
                name=name,
                marker_color=color,
                text=[f"trial {t.number}, val acc {format_value(t.user_attrs.get('val_accuracy'))}" for t in points],
            )
        )
    figure.update_layout(xaxis_title="parameters", xaxis_type="log", yaxis_title=OBJECTIVE_NAME, height=420, margin={"t": 30})
    return _Section(title, figure=figure)


def _state_counts_figure(trials: list[FrozenTrial]) -> go.Figure:
    counts = _nonzero(trials)
    figure = go.Figure(
        go.Bar(
            x=list(counts),
            y=list(counts.values()),
            text=list(counts.values()),
            textposition="outside",
            marker_color=[_STATE_COLORS.get(state, "#7f7f7f") for state in counts],
        )
    )
    figure.update_layout(yaxis_title="trials", height=320, margin={"t": 30})
    return figure


def _nonzero(trials: list[FrozenTrial]) -> dict[str, int]:
    return {state: n for state, n in state_counts(trials).items() if n}


def _counts_text(counts: dict[str, int]) -> str:
    order = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    labels = {"FAIL": "failed"}
    ordered = sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    return ", ".join(f"{n} {labels.get(state, state.lower())}" for state, n in ordered if n) or "no trials"


def _top_trials_table(study: optuna.Study, complete: list[FrozenTrial]) -> str:
    top = ranked_by_value(complete, direction=study.direction)[:TOP_TRIALS]
    param_names = list(dict.fromkeys(name for t in top for name in t.params))
    header = ["#", OBJECTIVE_NAME, *(label for _, label in _USER_ATTR_COLUMNS), *param_names]
    rows = []
    for trial in top:
        cells = [str(trial.number) + (" (baseline)" if trial.user_attrs.get(BASELINE_ATTR) else ""), format_value(trial.value)]
        cells += [format_value(trial.user_attrs.get(key)) for key, _ in _USER_ATTR_COLUMNS]
        cells += [format_value(trial.params.get(name)) for name in param_names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    return f'<table class="trials"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


@dataclass(frozen=True)
class _ExportView:
    """The study's ExportRecord and the model.json it points to, read defensively."""

    found: bool
    problem: str | None = None
    path: str | None = None
    trial: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    confusion_matrix: Any = None
    history: Any = None

    @classmethod
    def from_study(cls, study: optuna.Study) -> _ExportView:
        try:
            record = ExportRecord.of_study(study.user_attrs)
        except ValueError as exc:
            return cls(found=False, problem=str(exc))
        if record is None:
            return cls(found=False, problem="no final model yet; 'tuner export-best' trains the best trial and scores it on the test set")
        path, trial, test_accuracy, test_loss = record.path, record.trial, record.test_accuracy, record.test_loss
        model_json = Path(path) / METADATA_FILE
        try:
            details = json.loads(model_json.read_text(encoding="utf-8"))
            problem = None if isinstance(details, dict) else f"{model_json} does not hold a JSON object"
        except (OSError, ValueError) as exc:
            problem = f"{model_json} is {'missing' if isinstance(exc, FileNotFoundError) else f'unreadable ({exc})'}"
        if problem is not None:
            return cls(found=True, path=path, trial=trial, test_accuracy=test_accuracy, test_loss=test_loss, problem=problem)
        figures = FinalModelFigures.of_document(details)
        # model.json's own figures win over the study's copy of them.
        return cls(
            found=True,
            path=path,
            trial=trial,
            test_accuracy=test_accuracy if figures.test_accuracy is None else figures.test_accuracy,
            test_loss=test_loss if figures.test_loss is None else figures.test_loss,
            confusion_matrix=figures.confusion_matrix,
            history=figures.history,
        )

    def sections(self) -> list[_Section]:
        title = "Final model"
        if not self.found:
            return [_Section(title, note=self.problem)]
        accuracy = "unknown" if self.test_accuracy is None else f"{self.test_accuracy:.4f}"
        loss = "" if self.test_loss is None else f", test loss {self.test_loss:.4f}"
        summary = (
            f'<p class="headline">Test accuracy <b>{html.escape(accuracy)}</b>{html.escape(loss)}'
            f" — trial {html.escape(format_value(self.trial))}, saved in <code>{html.escape(self.path or '')}</code></p>"
        )
        sections = [_Section(title, html=summary, note=self.problem)]
        if self.problem is None:
            sections.append(_matrix_section(self.confusion_matrix))
            sections.append(_history_section(self.history))
        return sections


def _matrix_section(matrix: Any) -> _Section:
    title = "Confusion matrix (test set)"
    valid = (
        isinstance(matrix, list)
        and len(matrix) > 0
        and all(isinstance(row, list) and len(row) == len(matrix) and all(finite_number(v) is not None for v in row) for row in matrix)
    )
    if not valid:
        return _Section(title, note="model.json holds no square numeric confusion_matrix")
    labels = [str(i) for i in range(len(matrix))]
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            texttemplate="%{z}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
        )
    )
    figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed", height=520, width=600, margin={"t": 30})
    return _Section(title, figure=figure)


def _history_section(history: Any) -> _Section:
    title = "Final model training curves"
    epochs = [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []
    series: dict[str, list[tuple[float, float]]] = {}
    for index, entry in enumerate(epochs):
        epoch = finite_number(entry.get("epoch"))
        x = epoch if epoch is not None else index + 1
        for key, value in entry.items():
            if key != "epoch" and finite_number(value) is not None:
                series.setdefault(key, []).append((x, value))
    if not series:
        return _Section(title, note="model.json holds no per-epoch history")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for key, points in series.items():
        column = 2 if "acc" in key else 1
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=key), row=1, col=column)
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(height=380, margin={"t": 40})
    return _Section(title, figure=figure)


def _write_page(path: Path, page: str) -> None:
    """A full disk or a crash never leaves half a report, and an older one survives (tuner.swap)."""
    try:
        write_text_atomically(path, page, staging_prefix=".tuner-report-")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def _page(study: optuna.Study, storage_url: str, counts: dict[str, int], complete: list[FrozenTrial], sections: list[_Section]) -> str:
    summary = _counts_text(counts)
    best = ""
    trial = best_by_value(complete, direction=study.direction)
    if trial is not None:
        accuracy = trial.user_attrs.get(VAL_ACCURACY_ATTR)
        best = f"Best trial #{trial.number}: {OBJECTIVE_NAME} {format_value(trial.value)}" + (
            f", validation accuracy {format_value(accuracy)}" if accuracy is not None else ""
        )
    body = []
    for section in sections:
        parts = [f"<h2>{html.escape(section.title)}</h2>"]
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        if section.html:
            parts.append(section.html)
        if section.figure is not None:
            figure = section.figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})
            parts.append(f'<div class="figure">{figure}</div>')
        body.append(f"<section>{''.join(parts)}</section>")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tuner report: {html.escape(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }}
section {{ margin-bottom: 2.5rem; }}
.figure {{ overflow-x: auto; }}
.note {{ background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem .8rem; }}
.headline {{ font-size: 1.3rem; }}
table.trials {{ border-collapse: collapse; font-size: .85rem; }}
table.trials th, table.trials td {{ border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; }}
table.trials th {{ background: #f3f3f3; }}
</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>
</head>
<body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>{html.escape(describe_storage(storage_url))} · {html.escape(summary)} · generated {generated}</p>
<p>{html.escape(best)}</p>
{"".join(body)}
</body>
</html>
"""
