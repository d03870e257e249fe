"""The objective: a callable object given its data and settings, called once per trial."""

from __future__ import annotations

import contextlib
import time

import optuna

from tuner.data import TuningData
from tuner.errors import TrialError
from tuner.model import build_model
from tuner.provenance import TRIAL_SEED_ATTR, trial_seed
from tuner.records import FAIL_REASON_ATTR, LATENCY_MS_ATTR, N_PARAMS_ATTR, PORTFOLIO_ATTR, epoch_budget
from tuner.studyfile import StudySpec

__all__ = ["Objective"]


class Objective:
    """Builds the trial's model (the study's family), trains it, reports validation loss per epoch and prunes.

    Returns the lowest validation loss of the trial; records validation accuracy, the best epoch,
    the parameter count and the training time as user attributes.
    """

    def __init__(self, *, data: TuningData, spec: StudySpec, seed: int) -> None:
        self.data = data
        self.spec = spec
        self.seed = seed

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._train(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # Optuna records the trial as FAIL and the study goes on; the reason stays with the trial.
            _set_reason(trial, f"{type(exc).__name__}: {exc}"[:1000])
            raise

    def _train(self, trial: optuna.Trial) -> float:
        import keras

        from tuner.training import releasing_custom_gradients

        keras.backend.clear_session(free_memory=True)
        with releasing_custom_gradients():
            return self._fit(trial)

    def _fit(self, trial: optuna.Trial) -> float:
        import keras

        from tuner.training import EpochMonitor, measure_latency_ms

        seed = trial_seed(self.seed, trial.number)
        trial.set_user_attr(TRIAL_SEED_ATTR, seed)  # export-best trains the final model with this very seed
        keras.utils.set_random_seed(seed)
        budget = epoch_budget(trial.user_attrs)
        model, params = build_model(
            trial,
            self.spec.space,
            input_dim=self.data.input_dim,
            n_classes=self.data.n_classes,
            n_samples=len(self.data.x_train),
            training=self.spec.training,
            family=self.spec.family,
            image_shape=self.data.image_shape,
            epoch_budget=budget,
        )
        trial.set_user_attr(N_PARAMS_ATTR, int(model.count_params()))
        # The portfolio's configurations are the study's reference points: they always train to the end.
        # One trained on a cut budget anneals sooner, so its epochs are not on the pruner's scale.
        monitor = EpochMonitor(
            trial,
            patience=self.spec.training.patience,
            prune=PORTFOLIO_ATTR not in trial.user_attrs,
            sets_bar=params["epochs"] == trial.params.get("epochs", params["epochs"]),
        )
        started = time.perf_counter()
        try:
            model.fit(
                self.data.x_train,
                self.data.y_train,
                batch_size=params["batch_size"],
                epochs=params["epochs"],
                validation_data=(self.data.x_val, self.data.y_val),
                validation_batch_size=self.spec.training.validation_batch_size,
                callbacks=[monitor],
                shuffle=True,
                verbose=0,
            )
        finally:
            monitor.record(trial, time.perf_counter() - started)
        if monitor.best_loss is None:
            raise TrialError("training ended before the first epoch finished")
        # Cost of the trained model, for the accuracy-against-cost front (pruned trials never get here).
        trial.set_user_attr(LATENCY_MS_ATTR, round(measure_latency_ms(model, self.data.x_val), 6))
        return monitor.best_loss


def _set_reason(trial: optuna.Trial, reason: str) -> None:
    # Another worker may have failed this trial meanwhile (a stale heartbeat); the runner drops it.
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
