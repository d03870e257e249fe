"""Knowing when to stop: how much the best value moved recently, as an estimate of what is left.

The estimate is deliberately simple and cheap (no surrogate model): *recent gain* is how much the best
objective value improved over the last ``window`` finished trials. If the search keeps its current
pace, that is roughly what the next ``window`` trials can still add. A study counts as converged when
it has at least ``2 * window`` finished trials and the recent gain is below ``tolerance`` times the
best value's magnitude. Optuna's own regret-bound terminator is more principled but needs PyTorch and a
Gaussian-process fit per trial; this keeps ``tuner`` light and the rule easy to explain.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from tuner.trials import FINISHED_STATES

__all__ = ["Convergence", "estimate_convergence"]


@dataclass(frozen=True)
class Convergence:
    n_finished: int
    best_value: float | None
    recent_gain: float | None  # improvement of the best value over the last `window` finished trials
    window: int
    converged: bool

    def describe(self) -> str:
        if self.best_value is None or self.recent_gain is None:
            return "gain: not enough trials yet"
        state = "converged" if self.converged else "improving"
        return f"recent gain {self.recent_gain:.4f} over {self.window} trials ({state})"


def estimate_convergence(study: optuna.Study, *, window: int = 20, tolerance: float = 0.01) -> Convergence:
    trials = sorted(study.get_trials(deepcopy=False, states=FINISHED_STATES), key=lambda t: t.number)
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    best_so_far: list[float | None] = []
    best: float | None = None
    for trial in trials:
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            value = sign * trial.value
            best = value if best is None else min(best, value)
        best_so_far.append(best)
    if best is None or len(trials) <= window:
        return Convergence(len(trials), None if best is None else sign * best, None, window, False)
    before = best_so_far[-window - 1]
    if before is None:  # the first completed trial is inside the window: no pace to measure yet
        return Convergence(len(trials), sign * best, None, window, False)
    gain = before - best
    converged = len(trials) >= 2 * window and gain < tolerance * max(abs(best), 1e-12)
    return Convergence(len(trials), sign * best, gain, window, converged)
