"""The model builder, driven by FixedTrial as the final training job drives it."""

from __future__ import annotations

import optuna
import pytest

from tuner.model import LEGACY_PARAMS, build_model, learning_rate_schedule, rebuild_model, suggest_hyperparameters
from tuner.search import BASELINES, CNN_PORTFOLIO, PORTFOLIO, baseline_params, portfolio_params
from tuner.studyfile import OPEN_SPACE, StudySpec, TrainingSpec, default_study_file, load_study_file, parse_study

TRAINING = TrainingSpec()


def _build(params, n_samples=1000):
    # Parameters a test leaves out train as before they existed: no input dropout or weight decay, a constant rate.
    return build_model(
        optuna.trial.FixedTrial({**LEGACY_PARAMS, **params}),
        OPEN_SPACE,
        input_dim=784,
        n_classes=10,
        n_samples=n_samples,
        training=TRAINING,
    )


def test_softmax_regression_has_no_hidden_layer():
    model, params = _build({"n_layers": 0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128, "epochs": 5, "l2": 1e-8})
    assert model.count_params() == 784 * 10 + 10
    assert params["units"] == 0 and params["dropout"] == 0.0
    assert model.optimizer.__class__.__name__ == "SGD"


def test_two_hidden_layers_with_dropout_and_adam():
    model, params = _build(
        {
            "n_layers": 2,
            "units": 128,
            "dropout": 0.3,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 128,
            "epochs": 5,
            "l2": 1e-5,
        }
    )
    assert model.count_params() == (784 * 128 + 128) + (128 * 128 + 128) + (128 * 10 + 10)
    names = [layer.name for layer in model.layers]
    assert names.count("dropout_1") == 1 and "hidden_2" in names
    assert model.layers[1].kernel_regularizer is not None
    assert model.optimizer.__class__.__name__ == "Adam"
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


def test_momentum_optimizer_is_nesterov_sgd():
    model, _ = _build(
        {
            "n_layers": 1,
            "units": 32,
            "dropout": 0.0,
            "optimizer": "sgd_momentum",
            "learning_rate": 0.01,
            "batch_size": 64,
            "epochs": 5,
            "l2": 1e-8,
        }
    )
    assert model.optimizer.__class__.__name__ == "SGD" and model.optimizer.nesterov
    assert float(model.optimizer.momentum) == pytest.approx(0.9)


def test_fixed_parameters_are_recorded_so_trials_are_complete():
    spec = parse_study(document={"space": {"optimizer": "rmsprop", "n_layers": {"low": 1, "high": 1}}})
    study = optuna.create_study()
    trial = study.ask()
    params = suggest_hyperparameters(trial, spec.space)
    assert trial.params["optimizer"] == "rmsprop" == params["optimizer"]
    assert set(trial.params) == {
        "n_layers",
        "units",
        "input_dropout",
        "dropout",
        "optimizer",
        "learning_rate",
        "schedule",
        "batch_size",
        "epochs",
        "l2",
        "weight_decay",
    }


def test_baselines_fit_the_space():
    spec = load_study_file(path=default_study_file())
    fitted = baseline_params(spec)
    assert len(fitted) == len(BASELINES) == 3
    assert fitted[0]["n_layers"] == 0 and "units" not in fitted[0] and "input_dropout" not in fitted[0]
    # The budget is fixed by the default space (so not enqueued); the least regularisation the space allows.
    assert fitted[2] == {
        "n_layers": 2,
        "units": 128,
        "dropout": 0.3,
        "optimizer": "adam",
        "learning_rate": 0.001,
        "batch_size": 128,
        "weight_decay": 1e-6,
        "input_dropout": 0.0,
    }
    adam_only = parse_study(document={"space": {"optimizer": {"choices": ["adam"]}, "learning_rate": {"low": 0.01, "high": 0.2}}})
    kept = baseline_params(adam_only)
    assert [b["optimizer"] for b in kept] == ["adam"] and kept[0]["learning_rate"] == 0.01  # clipped into range
    assert baseline_params(StudySpec())  # all-fixed space: baselines reduce to nothing to set


def test_portfolio_fits_the_space_and_leaves_what_it_lacks_to_the_sampler():
    spec = load_study_file(path=default_study_file())
    fitted = portfolio_params(spec)
    assert [entry.name for entry, _ in fitted] == [entry.name for entry in PORTFOLIO]
    first = dict(fitted[0][1])
    assert first["n_layers"] == 2 and first["units"] == 512 and first["optimizer"] == "rmsprop"
    assert first["weight_decay"] == 1e-6  # 0 clipped to the log range's low end
    assert "epochs" not in first and "schedule" not in first  # fixed by the space: the study's values apply
    adam_only = parse_study(
        document={"space": {"optimizer": {"choices": ["adam", "sgd"]}, "units": {"low": 16, "high": 256}, "epochs": {"low": 2, "high": 9}}}
    )
    keras_mlp = dict(portfolio_params(adam_only)[0][1])
    assert "optimizer" not in keras_mlp  # RMSprop is not offered: the sampler chooses
    assert keras_mlp["units"] == 256 and keras_mlp["epochs"] == 9


def test_each_portfolios_lead_trains_a_third_of_the_epoch_budget_and_the_rest_all_of_it():
    for portfolio in (PORTFOLIO, CNN_PORTFOLIO):
        lead, *rest = portfolio
        assert [lead.epoch_budget(n) for n in (30, 10, 3, 2, 1)] == [10, 4, 1, 1, 1]  # rounded up, never 0 epochs
        assert all(entry.epoch_budget(30) is None for entry in rest)


def test_an_epoch_budget_cuts_the_trials_epochs_and_anneals_its_schedule_over_them():
    params = {
        "n_layers": 1,
        "units": 16,
        "dropout": 0.0,
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "batch_size": 100,
        "epochs": 9,
        "l2": 0.0,
    }
    trial = optuna.trial.FixedTrial({**LEGACY_PARAMS, **params, "schedule": "cosine"})
    model, built = build_model(trial, OPEN_SPACE, input_dim=784, n_classes=10, n_samples=1000, training=TRAINING, epoch_budget=3)
    assert built["epochs"] == 3  # what the objective trains: 3 epochs of 10 steps

    def rate_at(step: int) -> float:
        model.optimizer.iterations.assign(step)
        return float(model.optimizer.learning_rate.numpy())

    assert rate_at(15) > 0.0 and rate_at(30) == pytest.approx(0.0, abs=1e-9)  # annealed at step 30, not 90
    _, uncut = build_model(trial, OPEN_SPACE, input_dim=784, n_classes=10, n_samples=1000, training=TRAINING, epoch_budget=20)
    assert uncut["epochs"] == 9  # a budget above the trial's own epochs changes nothing


def test_cosine_schedule_warms_up_then_anneals_to_zero_at_the_end_of_the_budget():
    params = {"schedule": "cosine", "learning_rate": 0.01, "epochs": 10}
    schedule = learning_rate_schedule(params, steps_per_epoch=100)
    assert not isinstance(schedule, float)
    rates = [float(schedule(step)) for step in (0, 25, 50, 100, 525, 1000)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.005) and rates[2] == pytest.approx(0.01)  # warm-up: 5% of 1000 steps
    assert rates[3] < 0.01 and rates[4] == pytest.approx(0.005)  # half-way through the decay
    assert rates[5] == pytest.approx(0.0, abs=1e-9)  # annealed to zero at the end of the budget
    assert learning_rate_schedule({**params, "schedule": "constant"}, steps_per_epoch=100) == 0.01


def test_weight_decay_is_decoupled_and_spares_the_biases():
    model, params = _build(
        {
            "n_layers": 1,
            "units": 32,
            "input_dropout": 0.2,
            "dropout": 0.1,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 64,
            "epochs": 3,
            "l2": 0.0,
            "weight_decay": 0.01,
            "schedule": "cosine",
        }
    )
    assert model.optimizer.__class__.__name__ == "AdamW" and model.optimizer.weight_decay == pytest.approx(0.01)
    assert "input_dropout" in [layer.name for layer in model.layers]
    model.optimizer.build(model.trainable_variables)
    decayed = [v.name for v in model.trainable_variables if model.optimizer._use_weight_decay(v)]
    assert decayed and not any("bias" in name for name in decayed)


def test_trials_recorded_before_the_new_parameters_rebuild_as_they_trained():
    old = {"n_layers": 1, "units": 32, "dropout": 0.1, "optimizer": "sgd", "learning_rate": 0.05, "batch_size": 64, "epochs": 3, "l2": 1e-5}
    model, params = rebuild_model(old, input_dim=784, n_classes=10, n_samples=1000, training=TRAINING)
    assert params["schedule"] == "constant" and params["weight_decay"] == 0.0 and params["input_dropout"] == 0.0
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)
