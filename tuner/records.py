"""What tuner records on a trial beyond Optuna's own fields: the attribute names and their readers.

Writers (the objective, the runner) and readers (report, dashboard, benchmarks) import the names from
here, so a record is spelled once. Importing this module is cheap: no TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = ["EPOCH_LOG_ATTR", "DIVERGED_ATTR", "PORTFOLIO_ATTR", "BASELINE_ATTR", "EpochRecord", "epoch_log", "peak_accuracy"]

EPOCH_LOG_ATTR = "epoch_log"  # one entry per finished epoch, written as the epoch ends
DIVERGED_ATTR = "diverged"  # why a pruned trial's training diverged (NaN or infinite loss)
PORTFOLIO_ATTR = "portfolio"  # the portfolio configuration a trial runs (tuner.search.PORTFOLIO)
BASELINE_ATTR = "baseline"  # true for the tutorial's baseline configurations


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of a trial: when it ended (Unix seconds) and how the model did on validation."""

    epoch: int
    time: float
    val_loss: float
    val_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "time": round(self.time, 3), "val_loss": self.val_loss, "val_accuracy": self.val_accuracy}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> EpochRecord:
        return cls(
            epoch=int(entry["epoch"]),
            time=float(entry["time"]),
            val_loss=float(entry["val_loss"]),
            val_accuracy=float(entry["val_accuracy"]),
        )


def epoch_log(trial: FrozenTrial) -> list[EpochRecord]:
    """The trial's per-epoch record (empty for trials run before tuner kept one, or still in their first epoch).

    A queued trial has trained nothing: when it is the retry of an interrupted or dead trial, Optuna
    copied that trial's attributes into it, epoch log included, and those epochs are the other trial's.
    """
    if trial.state == TrialState.WAITING:
        return []
    entries = trial.user_attrs.get(EPOCH_LOG_ATTR)
    if not isinstance(entries, list):
        return []
    return [EpochRecord.from_dict(entry) for entry in entries if isinstance(entry, dict)]


def peak_accuracy(trial: FrozenTrial) -> EpochRecord | None:
    """The trial's epoch of highest validation accuracy (the earliest, if several tie); None without an epoch log."""
    scored = [record for record in epoch_log(trial) if math.isfinite(record.val_accuracy)]
    return max(scored, key=lambda record: (record.val_accuracy, -record.epoch)) if scored else None
