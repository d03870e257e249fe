"""What a study's trials add up to: which states are finished, how many trials are in each, which is best by value.

"Best" here is the search's own ranking, by the objective (validation loss, lowest first in a minimising
study). Which trial a final model is trained from is a different question, answered by tuner.selection.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["FINISHED_STATES", "state_counts", "ranked_by_value", "best_by_value"]

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state name, every state present (zero where none), in Optuna's order of states."""
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def ranked_by_value(trials: Iterable[FrozenTrial], *, direction: optuna.study.StudyDirection) -> list[FrozenTrial]:
    """The completed trials with a value, best first for the study's direction; ties keep the trials' order."""
    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    scored: list[tuple[float, FrozenTrial]] = [
        (sign * trial.value, trial) for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None
    ]
    return [trial for _, trial in sorted(scored, key=lambda pair: pair[0])]


def best_by_value(trials: Iterable[FrozenTrial], *, direction: optuna.study.StudyDirection) -> FrozenTrial | None:
    """The completed trial of best objective value (the lowest validation loss in tuner's studies), None without one."""
    ranked = ranked_by_value(trials, direction=direction)
    return ranked[0] if ranked else None
