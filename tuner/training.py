"""Keras-side training helpers. Importing this module imports TensorFlow: import it lazily."""

from __future__ import annotations

import contextlib
import ctypes
import math
import time
from collections.abc import Iterator
from typing import Any

import keras
import optuna

from tuner.errors import TrialError
from tuner.records import (
    BEST_EPOCH_ATTR,
    DIVERGED_ATTR,
    EPOCH_LOG_ATTR,
    EPOCHS_TRAINED_ATTR,
    TRAIN_SECONDS_ATTR,
    VAL_ACCURACY_ATTR,
    VAL_LOSS_ATTR,
    EpochRecord,
)

__all__ = [
    "EpochMonitor",
    "OBJECTIVE_METRIC",
    "configure_threads",
    "measure_latency_ms",
    "releasing_custom_gradients",
    "return_free_memory",
]

OBJECTIVE_METRIC = "val_xent"  # validation cross-entropy, without the L2 penalty


class EpochMonitor(keras.callbacks.Callback):
    """Tracks the best epoch; with a trial, reports each epoch, logs it and prunes through Optuna.

    Each epoch's validation loss and accuracy, with its wall-clock time, go to the trial's
    ``EPOCH_LOG_ATTR`` user attribute as the epoch ends (the report, the dashboard and the time-to-accuracy
    benchmark read it). The intermediate value reported to Optuna is the best validation loss so far,
    the value the trial would be scored on if it stopped there: a pruner's rung then compares what each
    trial has achieved, not one epoch's noise (KerasTuner's Hyperband compares a trial's best score too).
    A NaN or infinite loss ends the trial as *pruned* with an infinite intermediate
    value, so the sampler learns to avoid the region (a failed trial would teach it nothing); the reason
    is kept in ``DIVERGED_ATTR``. Training stops early after ``patience`` epochs without improvement.
    ``prune=False`` (the portfolio's configurations) reports every epoch and lets the pruner record it
    (a successive-halving rung compares later trials with it) but is never pruned. ``sets_bar=False``
    (a trial on a shorter schedule than the study's) reports every epoch but never asks the pruner, so
    no rung holds its values: at epoch 9 of a 10-epoch schedule its learning rate has all but annealed,
    where a trial of the full budget is a third of the way through, and it would set a bar no
    full-budget trial could meet at that epoch. (The median pruner reads every completed trial's reports,
    not the rungs, so it still counts such a trial: one value among the completed trials' at each step.)
    """

    def __init__(
        self,
        trial: optuna.Trial | None = None,
        *,
        patience: int = 0,
        metric: str = OBJECTIVE_METRIC,
        prune: bool = True,
        sets_bar: bool = True,
    ) -> None:
        super().__init__()
        self.trial = trial
        self.patience = patience
        self.metric = metric
        self.prune = prune
        self.sets_bar = sets_bar
        self.best_loss: float | None = None
        self.best_accuracy: float | None = None
        self.best_epoch = 0
        self.epochs_trained = 0
        self.history: list[dict[str, float]] = []
        self.log: list[EpochRecord] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        step = epoch + 1
        train_loss = float(logs.get("loss", math.nan))
        loss = float(logs.get(self.metric, train_loss))
        accuracy = float(logs.get("val_accuracy", logs.get("accuracy", math.nan)))
        self.epochs_trained = step
        self.history.append(
            {
                "epoch": step,
                "loss": train_loss,
                "accuracy": float(logs.get("accuracy", math.nan)),
                self.metric: loss,
                "val_accuracy": accuracy,
            }
        )
        for name, value in (("training loss", train_loss), ("validation loss", loss)):
            if not math.isfinite(value):
                self.model.stop_training = True
                self._diverged(f"{name} became {value} at epoch {step}", step)
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_epoch, self.best_accuracy = loss, step, accuracy
        if self.trial is not None:
            self.log.append(EpochRecord(epoch=step, time=time.time(), val_loss=loss, val_accuracy=accuracy))
            self.trial.set_user_attr(EPOCH_LOG_ATTR, [record.to_dict() for record in self.log])
            # The best loss so far, the quantity the trial is scored on: one noisy epoch does not decide a rung.
            self.trial.report(self.best_loss, step=step)
            # Asked even when the trial may not be pruned, so that it still sets the bar at each rung.
            if self.sets_bar and self.trial.should_prune() and self.prune:
                raise optuna.TrialPruned(f"pruned after epoch {step} (best validation loss {self.best_loss:.4f})")
        if self.patience and step - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def _diverged(self, reason: str, step: int) -> None:
        if self.trial is None:
            raise TrialError(reason)
        self.trial.set_user_attr(DIVERGED_ATTR, reason)
        self.trial.report(math.inf, step=step)
        raise optuna.TrialPruned(f"diverged: {reason}")

    def record(self, trial: optuna.Trial, seconds: float) -> None:
        trial.set_user_attr(TRAIN_SECONDS_ATTR, round(seconds, 3))
        trial.set_user_attr(EPOCHS_TRAINED_ATTR, self.epochs_trained)
        if self.best_loss is not None:
            trial.set_user_attr(BEST_EPOCH_ATTR, self.best_epoch)
            trial.set_user_attr(VAL_ACCURACY_ATTR, self.best_accuracy)
            trial.set_user_attr(VAL_LOSS_ATTR, self.best_loss)


def configure_threads(threads: int) -> None:
    """Pin TensorFlow's thread pools; must run before the first TensorFlow operation."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # TensorFlow already started in this process; its pools keep their size


def measure_latency_ms(model: keras.Model, x, *, batch: int = 256, repeats: int = 5) -> float:
    """CPU inference time per sample, in milliseconds: best of ``repeats`` forward passes over one batch."""
    import time

    sample = x[:batch]
    model(sample, training=False)  # warm-up: first call builds and allocates
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model(sample, training=False)
        best = min(best, time.perf_counter() - started)
    return 1000.0 * best / len(sample)


@contextlib.contextmanager
def releasing_custom_gradients() -> Iterator[None]:
    """Forget the gradient functions TensorFlow registered while the block ran.

    Each traced train step registers a ``CustomGradient-<uid>`` function in TensorFlow's global gradient
    registry (Keras' optimizer all-reduce uses ``tf.custom_gradient``). The registry is never emptied,
    not even by ``keras.backend.clear_session()``, and each entry pins its whole traced graph: about
    8 MB per trial (tensorflow/tensorflow#97697, #80895). Entries from earlier blocks are left alone.
    """
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    if not isinstance(registry, dict):  # a TensorFlow whose registry moved: nothing we can release
        yield
        return
    before = set(registry)
    try:
        yield
    finally:
        for name in [name for name in registry if name not in before and name.startswith("CustomGradient-")]:
            del registry[name]


def return_free_memory() -> None:
    """Hand the heap the finished trial freed back to the OS (glibc keeps it per thread arena otherwise).

    Runs after Optuna's per-trial garbage collection. It cuts a worker's resident growth over hundreds
    of trials by about a quarter (benchmarks/memory.py); elsewhere than glibc it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
