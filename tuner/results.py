"""What a run reports: each trial's outcome, the run's start and result, and the tally the trial cap counts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.convergence import Convergence
from tuner.records import DIVERGED_ATTR, FAIL_REASON_ATTR, VAL_ACCURACY_ATTR
from tuner.storageurl import describe_storage
from tuner.trials import FINISHED_STATES, best_by_value, state_counts

__all__ = ["TrialOutcome", "TrialEnded", "RunStart", "RunResult", "Tally", "short_of", "up_to_target", "summarize", "best_outcome"]


@dataclass(frozen=True)
class TrialOutcome:
    number: int
    state: str
    value: float | None
    val_accuracy: float | None
    params: dict[str, Any]
    seconds: float | None
    reason: str | None

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialOutcome:
        seconds = (
            (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete and trial.datetime_start else None
        )
        return cls(
            number=trial.number,
            state=trial.state.name,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
            val_accuracy=trial.user_attrs.get(VAL_ACCURACY_ATTR),
            params=dict(trial.params),
            seconds=seconds,
            reason=trial.user_attrs.get(FAIL_REASON_ATTR) or trial.user_attrs.get(DIVERGED_ATTR),
        )


@dataclass(frozen=True)
class TrialEnded:
    """What ``run_study`` reports after each trial of its process: the trial, the study's finished count, its best trial."""

    outcome: TrialOutcome
    n_finished: int
    best: TrialOutcome | None


@dataclass(frozen=True)
class RunStart:
    study_name: str
    storage: str
    data_source: str
    n_target: int | None  # None: no count, a timeout ends the run
    n_finished_before: int
    n_portfolio_enqueued: int
    n_baselines_enqueued: int
    n_train: int
    n_val: int
    n_warm_started: int = 0
    warm_start_source: str | None = None


@dataclass(frozen=True)
class RunResult:
    study_name: str
    storage: str
    n_target: int | None
    counts: dict[str, int]
    best: TrialOutcome | None
    new_trials: int
    wall_seconds: float
    outcomes: list[TrialOutcome] = field(default_factory=list)
    n_retried: int = 0  # failed trials of dead workers that a later trial re-ran; they do not count towards the total
    workers: int = 1
    converged: Convergence | None = None  # set when --until-converged stopped the run early

    @property
    def n_finished(self) -> int:
        return sum(self.counts.get(state.name, 0) for state in FINISHED_STATES) - self.n_retried


def _retry_history(trial: FrozenTrial) -> list[int]:
    """The trials this one retries (Optuna's heartbeat retry callback records them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # experimental since Optuna 3.0
        return optuna.storages.RetryFailedTrialCallback.retry_history(trial)


@dataclass(frozen=True)
class Tally:
    """What the trial cap counts. A FAIL trial that was retried (its worker died) is replaced by its retry."""

    finished: int
    running: int
    retried: frozenset[int]

    @property
    def taken(self) -> int:
        return self.finished + self.running

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> Tally:
        retried = frozenset(number for trial in trials for number in _retry_history(trial))
        return cls(
            finished=sum(1 for t in trials if t.state in FINISHED_STATES and t.number not in retried),
            running=sum(1 for t in trials if t.state == TrialState.RUNNING),
            retried=retried,
        )


def short_of(target: int | None, count: int) -> bool:
    """Whether ``count`` trials fall short of a run's ``target`` (None: no count to reach)."""
    return target is None or count < target


def up_to_target(count: int, target: int | None) -> int:
    """``count``, at most a run's ``target`` (None: no count to reach)."""
    return count if target is None else min(count, target)


def summarize(
    study: optuna.Study,
    storage_url: str,
    *,
    n_target: int | None,
    new_trials: int = 0,
    wall_seconds: float = 0.0,
    outcomes: list[TrialOutcome] | None = None,
    workers: int = 1,
) -> RunResult:
    trials = study.get_trials(deepcopy=False)
    return RunResult(
        study_name=study.study_name,
        storage=describe_storage(storage_url),
        n_target=n_target,
        counts=state_counts(trials),
        best=best_outcome(study),
        new_trials=new_trials,
        wall_seconds=wall_seconds,
        outcomes=outcomes or [],
        n_retried=len(Tally.of(trials).retried),
        workers=workers,
    )


def best_outcome(study: optuna.Study) -> TrialOutcome | None:
    """The study's best trial by value (lowest validation loss), None before the first completed trial."""
    best = best_by_value(study.get_trials(deepcopy=False), direction=study.direction)
    return None if best is None else TrialOutcome.from_trial(best)
