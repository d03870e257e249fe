"""Accuracy against cost: the Pareto front of finished trials, and the best trial within a budget.

The search itself stays single-objective (validation loss), so Optuna's pruner keeps working; cost
(parameter count, measured CPU inference latency) is recorded for every trial that trains to the end,
and the trade-off is computed over those trials afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import ConfigError, StudyNotFoundError
from tuner.records import LATENCY_MS_ATTR, N_PARAMS_ATTR, VAL_ACCURACY_ATTR
from tuner.selection import most_accurate

__all__ = ["COST_AXES", "ParetoPoint", "pareto_front", "pareto_trials", "best_within_budget"]

# axis name -> how a finished trial states it
COST_AXES = {"val_loss": "value", "params": N_PARAMS_ATTR, "latency": LATENCY_MS_ATTR}


@dataclass(frozen=True)
class ParetoPoint:
    number: int
    val_loss: float
    val_accuracy: float | None
    n_params: int | None
    latency_ms: float | None  # CPU inference time per sample
    params: dict[str, Any]

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> ParetoPoint:
        return cls(
            number=trial.number,
            val_loss=math.inf if trial.value is None else float(trial.value),  # a trial without a value is beaten on loss
            val_accuracy=trial.user_attrs.get(VAL_ACCURACY_ATTR),
            n_params=trial.user_attrs.get(N_PARAMS_ATTR),
            latency_ms=trial.user_attrs.get(LATENCY_MS_ATTR),
            params=dict(trial.params),
        )

    def axis(self, name: str) -> float:
        value = {"val_loss": self.val_loss, "params": self.n_params, "latency": self.latency_ms}[name]
        return float("inf") if value is None else float(value)


def pareto_trials(study: optuna.Study, *, objectives: Sequence[str] = ("val_loss", "params", "latency")) -> list[ParetoPoint]:
    """Completed trials no other completed trial beats on every objective (all minimised), sorted by loss."""
    unknown = [name for name in objectives if name not in COST_AXES]
    if unknown or not objectives:
        raise ConfigError(f"unknown objectives {unknown or objectives} (expected some of: {', '.join(COST_AXES)})")
    points = [ParetoPoint.from_trial(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    vectors = [tuple(point.axis(name) for name in objectives) for point in points]

    def dominated(i: int) -> bool:
        mine = vectors[i]
        return any(all(o <= m for o, m in zip(other, mine, strict=True)) and other != mine for other in vectors)

    front = [point for i, point in enumerate(points) if not dominated(i)]
    return sorted(front, key=lambda p: (p.val_loss, p.number))


def pareto_front(*, study: optuna.Study, objectives: Sequence[str] = ("val_loss", "params", "latency")) -> list[ParetoPoint]:
    """The Pareto-optimal completed trials, sorted by validation loss; ``StudyNotFoundError`` if there is none.

    Args:
        study: a study that ``tuner run`` made (``load_study``).
        objectives: the axes, all minimised: ``val_loss``, ``params``, ``latency`` (CPU ms per sample).

    Example::

        front = pareto_front(study=load_study(storage_url="sqlite:///tuner.db", study_name=None), objectives=("val_loss", "params"))
        print([(point.number, point.n_params) for point in front])
    """
    front = pareto_trials(study, objectives=objectives)
    if not front:
        raise StudyNotFoundError(f"study {study.study_name!r} has no completed trial yet")
    return front


def best_within_budget(*, study: optuna.Study, max_params: int | None = None, max_latency_ms: float | None = None) -> FrozenTrial:
    """The completed trial within the budget that a final model is trained from: the most accurate (tuner.selection).

    Args:
        study: a study that ``tuner run`` made (``load_study``).
        max_params: at most this many model parameters.
        max_latency_ms: at most this CPU inference time per sample.

    Raises ``StudyNotFoundError`` when no completed trial fits.

    Example::

        trial = best_within_budget(study=load_study(storage_url="sqlite:///tuner.db", study_name=None), max_params=50_000)
    """
    fitting = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        n_params, latency = trial.user_attrs.get(N_PARAMS_ATTR), trial.user_attrs.get(LATENCY_MS_ATTR)
        if max_params is not None and (n_params is None or n_params > max_params):
            continue
        if max_latency_ms is not None and (latency is None or latency > max_latency_ms):
            continue
        fitting.append(trial)
    selection = most_accurate(fitting)
    if selection is None:
        budget = ", ".join(
            part
            for part in (max_params and f"at most {max_params} parameters", max_latency_ms and f"at most {max_latency_ms} ms per sample")
            if part
        )
        raise StudyNotFoundError(f"no completed trial of study {study.study_name!r} fits the budget ({budget})")
    return selection.trial
