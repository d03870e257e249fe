"""Running a study: the library call behind ``tuner run``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.config import RunConfig
from tuner.data import load_tuning_data
from tuner.search import baseline_params, make_pruner, make_sampler
from tuner.storage import describe_storage, open_storage

__all__ = ["TrialOutcome", "RunStart", "RunResult", "run_study", "FINISHED_STATES"]

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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
    def from_trial(cls, trial: FrozenTrial) -> "TrialOutcome":
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete and trial.datetime_start else None
        return cls(
            number=trial.number,
            state=trial.state.name,
            value=trial.value if trial.state == TrialState.COMPLETE else None,
            val_accuracy=trial.user_attrs.get("val_accuracy"),
            params=dict(trial.params),
            seconds=seconds,
            reason=trial.user_attrs.get("fail_reason"),
        )


@dataclass(frozen=True)
class RunStart:
    study_name: str
    storage: str
    data_source: str
    n_target: int
    n_finished_before: int
    n_baselines_enqueued: int
    n_train: int
    n_val: int


@dataclass(frozen=True)
class RunResult:
    study_name: str
    storage: str
    n_target: int
    counts: dict[str, int]
    best: TrialOutcome | None
    new_trials: int
    wall_seconds: float
    outcomes: list[TrialOutcome] = field(default_factory=list)

    @property
    def n_finished(self) -> int:
        return sum(self.counts.get(state.name, 0) for state in FINISHED_STATES)


def run_study(
    config: RunConfig,
    *,
    on_start: Callable[[RunStart], None] | None = None,
    on_trial_end: Callable[[TrialOutcome, int, TrialOutcome | None], None] | None = None,
) -> RunResult:
    """Create or resume the study and run trials until it holds ``config.n_trials`` finished trials.

    ``on_trial_end(outcome, n_finished, best)`` is called after every trial of this process.
    """
    started = time.perf_counter()
    spec = config.spec
    # Data and storage problems both stop the run before the first trial.
    data = load_tuning_data(
        dataset=spec.dataset, data_path=config.data_path, validation_fraction=spec.validation_fraction, split_seed=spec.split_seed
    )
    storage = open_storage(config.storage_url)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        sampler=make_sampler(spec.sampler),
        pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs),
        direction="minimize",
        load_if_exists=True,
    )
    enqueued = 0
    if not study.get_trials(deepcopy=False):
        _record_provenance(study, config)
        if config.baselines:
            for params in baseline_params(spec):
                study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
                enqueued += 1

    finished_before = _count_finished(study)
    if on_start:
        on_start(
            RunStart(
                study_name=config.study_name,
                storage=describe_storage(config.storage_url),
                data_source=data.source,
                n_target=config.n_trials,
                n_finished_before=finished_before,
                n_baselines_enqueued=enqueued,
                n_train=len(data.x_train),
                n_val=len(data.x_val),
            )
        )

    outcomes: list[TrialOutcome] = []

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        outcome = TrialOutcome.from_trial(trial)
        outcomes.append(outcome)
        if on_trial_end:
            on_trial_end(outcome, _count_finished(study), _best(study))

    remaining = config.n_trials - finished_before
    if remaining > 0:
        if config.threads:
            from tuner.training import configure_threads

            configure_threads(config.threads)
        from tuner.objective import Objective

        study.optimize(
            Objective(data=data, spec=spec, seed=config.seed),
            n_trials=remaining,
            timeout=config.timeout,
            callbacks=[optuna.study.MaxTrialsCallback(config.n_trials, states=FINISHED_STATES), after_trial],
            catch=(Exception,),
            gc_after_trial=True,
        )
    return summarize(study, config.storage_url, n_target=config.n_trials, new_trials=len(outcomes), wall_seconds=time.perf_counter() - started, outcomes=outcomes)


def summarize(study: optuna.Study, storage_url: str, *, n_target: int, new_trials: int = 0, wall_seconds: float = 0.0, outcomes: list[TrialOutcome] | None = None) -> RunResult:
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return RunResult(
        study_name=study.study_name,
        storage=describe_storage(storage_url),
        n_target=n_target,
        counts=counts,
        best=_best(study),
        new_trials=new_trials,
        wall_seconds=wall_seconds,
        outcomes=outcomes or [],
    )


def _best(study: optuna.Study) -> TrialOutcome | None:
    try:
        return TrialOutcome.from_trial(study.best_trial)
    except ValueError:  # no completed trial yet
        return None


def _count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def _record_provenance(study: optuna.Study, config: RunConfig) -> None:
    """What the final training job needs to rebuild the search's data split and training settings."""
    spec = config.spec
    study.set_user_attr(
        "tuner",
        {
            "study_file": spec.source,
            "dataset": spec.dataset,
            "data_path": config.data_path,
            "validation_fraction": spec.validation_fraction,
            "split_seed": spec.split_seed,
            "seed": config.seed,
            "steps_per_execution": spec.training.steps_per_execution,
            "jit_compile": spec.training.jit_compile,
        },
    )
