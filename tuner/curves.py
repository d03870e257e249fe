"""Validation-accuracy curves from the trials' epoch logs, as plotly figures.

Optuna's intermediate values hold each epoch's validation *loss* (what the pruner compares); the
accuracy a user asks about lives in each trial's epoch log (``tuner.records``). The report embeds
these figures, and ``tuner dashboard`` stores them in the study so optuna-dashboard shows them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from tuner.records import epoch_log

__all__ = ["ACCURACY_PER_EPOCH", "ACCURACY_OVER_TIME", "accuracy_per_epoch_figure", "accuracy_over_time_figure"]

ACCURACY_PER_EPOCH = "Validation accuracy per epoch"
ACCURACY_OVER_TIME = "Best validation accuracy over time"
_STATE_COLORS = {"COMPLETE": "#2ca02c", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#1f77b4"}


def accuracy_per_epoch_figure(trials: Sequence[FrozenTrial]) -> go.Figure | None:
    """One line per trial, coloured by its state; ``None`` when no trial has finished an epoch."""
    logged = [(trial, epoch_log(trial)) for trial in trials]
    logged = [(trial, log) for trial, log in logged if log]
    if not logged:
        return None
    figure = go.Figure()
    shown_states: set[str] = set()
    for trial, log in logged:
        state = trial.state.name
        figure.add_trace(
            go.Scatter(
                x=[record.epoch for record in log],
                y=[record.val_accuracy for record in log],
                mode="lines+markers",
                marker={"size": 4},
                line={"color": _STATE_COLORS.get(state, "#7f7f7f"), "width": 1},
                name=state.lower(),
                legendgroup=state,
                showlegend=state not in shown_states,
                hovertemplate=f"trial {trial.number} ({state.lower()})<br>epoch %{{x}}<br>val acc %{{y:.4f}}<extra></extra>",
            )
        )
        shown_states.add(state)
    figure.update_layout(xaxis_title="epoch", yaxis_title="validation accuracy", height=420, margin={"t": 30})
    _zoom_on_the_top(figure, [record.val_accuracy for _, log in logged for record in log])
    return figure


def accuracy_over_time_figure(trials: Sequence[FrozenTrial]) -> go.Figure | None:
    """The best validation accuracy of any epoch so far against minutes since the study's first epoch
    started: how long the search took to reach each accuracy."""
    records = [(record, trial.number) for trial in trials for record in epoch_log(trial)]
    if not records:
        return None
    starts = [trial.datetime_start.timestamp() for trial in trials if trial.datetime_start and epoch_log(trial)]
    origin = min(starts) if starts else min(record.time for record, _ in records)
    best, xs, ys, labels = 0.0, [], [], []
    for record, number in sorted(records, key=lambda item: item[0].time):
        if record.val_accuracy > best:
            best = record.val_accuracy
            xs.append((record.time - origin) / 60)
            ys.append(best)
            labels.append(f"trial {number}, epoch {record.epoch}")
    figure = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv", text=labels, name="best so far"))
    figure.update_layout(
        xaxis_title="minutes since the first trial started", yaxis_title="best validation accuracy", height=380, margin={"t": 30}
    )
    _zoom_on_the_top(figure, ys)
    return figure


def _zoom_on_the_top(figure: go.Figure, accuracies: list[float]) -> None:
    """Start the axis near the good results: the interesting differences are fractions of a point."""
    finite = sorted(a for a in accuracies if a == a)
    if len(finite) >= 4:
        low = finite[len(finite) // 4]  # the lowest quarter (early epochs, pruned trials) may fall off the bottom
        figure.update_yaxes(range=[max(0.0, low - 0.02), min(1.0, finite[-1] + 0.005)])
