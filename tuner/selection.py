"""Which trial a final model is trained from, and for how many epochs.

The search minimises validation loss: a smooth signal that ranks trials well early on, which is what
the sampler and the pruner need. A final model is judged on accuracy, and the two part ways late in a
trial: under an annealed learning rate a model keeps getting more accurate while growing more
confident, so its loss reaches its minimum epochs before its accuracy peaks. Picking the trial of
lowest loss, trained to that loss's epoch, can therefore export a model stopped halfway down its
schedule. The final model is instead the completed trial of highest validation accuracy, trained to the
epoch where that accuracy was reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tuner.records import BEST_EPOCH_ATTR, VAL_ACCURACY_ATTR, peak_accuracy

__all__ = ["Selection", "most_accurate", "final_epochs"]


@dataclass(frozen=True)
class Selection:
    """A trial chosen for the final model and the validation accuracy it is chosen for."""

    trial: FrozenTrial
    val_accuracy: float | None  # None for trials recorded before tuner kept an epoch log
    epoch: int  # the epoch count the final model trains


def most_accurate(trials: Iterable[FrozenTrial]) -> Selection | None:
    """The completed trial of highest validation accuracy at any epoch.

    Ties go to the lower validation loss, then to the earlier trial. Trials recorded without an epoch
    log (older studies) compete with the accuracy of their lowest-loss epoch.
    """
    candidates = [_selection(trial) for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None]
    if not candidates:
        return None
    return max(
        candidates, key=lambda s: (-1.0 if s.val_accuracy is None else s.val_accuracy, -float(s.trial.value or 0.0), -s.trial.number)
    )


def final_epochs(trial: FrozenTrial) -> int | None:
    """How many epochs a final model of this trial trains: to its peak validation accuracy, else its lowest loss."""
    return _selection(trial).epoch or None


def _selection(trial: FrozenTrial) -> Selection:
    peak = peak_accuracy(trial)
    if peak is not None:
        return Selection(trial=trial, val_accuracy=peak.val_accuracy, epoch=peak.epoch)
    accuracy, epoch = trial.user_attrs.get(VAL_ACCURACY_ATTR), trial.user_attrs.get(BEST_EPOCH_ATTR)
    return Selection(
        trial=trial,
        val_accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        epoch=epoch if isinstance(epoch, int) and epoch >= 1 else 0,
    )
