"""What tuner records on a trial beyond Optuna's own fields: the attribute names and their readers.

Writers (the objective, the runner) and readers (report, dashboard, benchmarks) import the names from
here, so a record is spelled once. Importing this module is cheap: no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "EPOCH_LOG_ATTR",
    "DIVERGED_ATTR",
    "PORTFOLIO_ATTR",
    "BASELINE_ATTR",
    "WARM_START_ATTR",
    "EPOCH_BUDGET_ATTR",
    "FAIL_REASON_ATTR",
    "VAL_LOSS_ATTR",
    "VAL_ACCURACY_ATTR",
    "BEST_EPOCH_ATTR",
    "EPOCHS_TRAINED_ATTR",
    "TRAIN_SECONDS_ATTR",
    "N_PARAMS_ATTR",
    "LATENCY_MS_ATTR",
    "EpochRecord",
    "epoch_budget",
    "epoch_log",
    "peak_accuracy",
    "trained_params",
    "within_epoch_budget",
]

EPOCH_LOG_ATTR = "epoch_log"  # one entry per finished epoch, written as the epoch ends
DIVERGED_ATTR = "diverged"  # why a pruned trial's training diverged (NaN or infinite loss)
PORTFOLIO_ATTR = "portfolio"  # the portfolio configuration a trial runs (tuner.search.PORTFOLIO)
BASELINE_ATTR = "baseline"  # true for the tutorial's baseline configurations
WARM_START_ATTR = "warm_start_from"  # "study#trial": the other study's trial a warm-started trial repeats
# Epochs a trial trains, its schedule annealed over them, when fewer than its ``epochs`` parameter (set
# when it is queued: the portfolio's quick lead); ``trained_params`` is what it trained.
EPOCH_BUDGET_ATTR = "epoch_budget"
FAIL_REASON_ATTR = "fail_reason"  # why a failed trial failed (an error, or an interrupt); None on its retry
# What a trial records as its training ends (tuner.training, tuner.objective), pruned or not:
VAL_LOSS_ATTR = "val_loss"  # its lowest validation loss
VAL_ACCURACY_ATTR = "val_accuracy"  # the validation accuracy of that epoch
BEST_EPOCH_ATTR = "best_epoch"  # that epoch, counted from 1
EPOCHS_TRAINED_ATTR = "epochs_trained"
TRAIN_SECONDS_ATTR = "train_seconds"
N_PARAMS_ATTR = "n_params"  # the model's weights
LATENCY_MS_ATTR = "latency_ms"  # CPU inference time per sample, in milliseconds (completed trials only)


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


def epoch_budget(user_attrs: Mapping[str, Any]) -> int | None:
    """The shorter epoch budget a trial was queued with (``EPOCH_BUDGET_ATTR``), else None."""
    budget = user_attrs.get(EPOCH_BUDGET_ATTR)
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1 else None


def trained_params(trial: FrozenTrial) -> dict[str, Any]:
    """The configuration the trial trained: its parameters, with ``epochs`` cut to its epoch budget if it had one.

    The final training job rebuilds a trial from these, so that its schedule spans what the trial's did.
    """
    return within_epoch_budget(trial.params, epoch_budget(trial.user_attrs))


def within_epoch_budget(params: Mapping[str, Any], budget: int | None) -> dict[str, Any]:
    """``params`` with ``epochs`` cut to ``budget``; a budget never adds epochs, and None changes nothing."""
    cut = dict(params)
    if budget is not None and "epochs" in cut:
        cut["epochs"] = min(budget, int(cut["epochs"]))
    return cut
