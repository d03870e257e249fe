"""The model builder, driven by FixedTrial as the final training job drives it."""

from __future__ import annotations

import optuna
import pytest

from tuner.model import build_model, suggest_hyperparameters
from tuner.search import BASELINES, baseline_params
from tuner.studyfile import StudySpec, TrainingSpec, default_study_file, load_study_file, parse_study

SPACE = load_study_file(default_study_file()).space
TRAINING = TrainingSpec()


def _build(params):
    return build_model(optuna.trial.FixedTrial(params), SPACE, input_dim=784, n_classes=10, training=TRAINING)


def test_softmax_regression_has_no_hidden_layer():
    model, params = _build({"n_layers": 0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128, "epochs": 5, "l2": 1e-8})
    assert model.count_params() == 784 * 10 + 10
    assert params["units"] == 0 and params["dropout"] == 0.0
    assert model.optimizer.__class__.__name__ == "SGD"


def test_two_hidden_layers_with_dropout_and_adam():
    model, params = _build({"n_layers": 2, "units": 128, "dropout": 0.3, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 128, "epochs": 5, "l2": 1e-5})
    assert model.count_params() == (784 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
    names = [layer.name for layer in model.layers]
    assert names.count("dropout_1") == 1 and "hidden_2" in names
    assert model.layers[1].kernel_regularizer is not None
    assert model.optimizer.__class__.__name__ == "Adam"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


def test_momentum_optimizer_is_nesterov_sgd():
    model, _ = _build({"n_layers": 1, "units": 32, "dropout": 0.0, "optimizer": "sgd_momentum", "learning_rate": 0.01, "batch_size": 64, "epochs": 5, "l2": 1e-8})
    assert model.optimizer.__class__.__name__ == "SGD" and model.optimizer.nesterov
    assert float(model.optimizer.momentum) == pytest.approx(0.9)


def test_fixed_parameters_are_recorded_so_trials_are_complete():
    spec = parse_study({"space": {"optimizer": "rmsprop", "n_layers": {"low": 1, "high": 1}}})
    study = optuna.create_study()
    trial = study.ask()
    params = suggest_hyperparameters(trial, spec.space)
    assert trial.params["optimizer"] == "rmsprop" == params["optimizer"]
    assert set(trial.params) == {"n_layers", "units", "dropout", "optimizer", "learning_rate", "batch_size", "epochs", "l2"}


def test_baselines_fit_the_space():
    spec = load_study_file(default_study_file())
    fitted = baseline_params(spec)
    assert len(fitted) == len(BASELINES) == 3
    assert fitted[0]["n_layers"] == 0 and "units" not in fitted[0]
    assert fitted[2] == {"n_layers": 2, "units": 128, "dropout": 0.3, "optimizer": "adam", "learning_rate": 0.001, "batch_size": 128, "epochs": 30, "l2": 1e-8}
    adam_only = parse_study({"space": {"optimizer": {"choices": ["adam"]}, "learning_rate": {"low": 0.01, "high": 0.2}}})
    kept = baseline_params(adam_only)
    assert [b["optimizer"] for b in kept] == ["adam"] and kept[0]["learning_rate"] == 0.01  # clipped into range
    assert baseline_params(StudySpec())  # all-fixed space: baselines reduce to nothing to set
