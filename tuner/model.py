"""The one place that turns a trial into a Keras model: every MLP ``suggest_*`` call lives here.

``build_model`` dispatches on the study's family: an MLP is built here, a CNN by ``tuner.cnn`` (whose
``suggest_*`` calls live there); both are compiled here the same way. ``build_model`` takes any Optuna
trial, so the final training job rebuilds the exact model of a finished trial by passing
``optuna.trial.FixedTrial(trial.params)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tuner.records import within_epoch_budget
from tuner.studyfile import OPEN_SPACES, TRAINING_PARAMETERS, Choice, FloatRange, IntRange, ParamSpec, TrainingSpec

if TYPE_CHECKING:
    import keras
    import optuna

__all__ = [
    "suggest_hyperparameters",
    "suggest_parameter",
    "build_model",
    "rebuild_model",
    "missing_params",
    "check_space_fits_data",
    "count_params",
    "learning_rate_schedule",
    "LEGACY_PARAMS",
]

# What trials recorded before these parameters existed trained with, so their models can still be rebuilt.
LEGACY_PARAMS: Mapping[str, Any] = {"input_dropout": 0.0, "weight_decay": 0.0, "schedule": "constant"}

# Parameters every trial draws; the hidden-layer ones (units, dropouts) only when there are hidden layers.
_TRAINING_PARAMS = TRAINING_PARAMETERS


def suggest_hyperparameters(trial: optuna.trial.BaseTrial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Draw one configuration; hidden-layer parameters are only drawn when there are hidden layers."""
    params: dict[str, Any] = {}
    params["n_layers"] = suggest_parameter(trial, "n_layers", space["n_layers"])
    if params["n_layers"] > 0:
        for name in ("units", "input_dropout", "dropout"):
            params[name] = suggest_parameter(trial, name, space[name])
    else:
        params["units"], params["input_dropout"], params["dropout"] = 0, 0.0, 0.0
    for name in _TRAINING_PARAMS:
        params[name] = suggest_parameter(trial, name, space[name])
    return params


def build_model(
    trial: optuna.trial.BaseTrial,
    space: Mapping[str, ParamSpec],
    *,
    input_dim: int,
    n_classes: int,
    n_samples: int,
    training: TrainingSpec,
    family: str = "mlp",
    image_shape: tuple[int, int, int] | None = None,
    epoch_budget: int | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """Suggest a configuration and return the compiled model with the parameters it trains with.

    ``n_samples`` is the size of one training epoch: the learning-rate schedule spans the trial's
    whole epoch budget, counted in optimizer steps; ``epoch_budget`` cuts that budget (and the
    returned ``epochs``) below the trial's ``epochs`` parameter. ``family`` chooses the network
    (studyfile.FAMILIES); a CNN also needs the (height, width, channels) its input rows were flattened from.
    """
    import keras

    if family == "cnn":
        from tuner.cnn import build_cnn, suggest_cnn_hyperparameters

        params = suggest_cnn_hyperparameters(trial, space)
        model = build_cnn(params, input_dim=input_dim, image_shape=image_shape, n_classes=n_classes, regularizer=_regularizer(params))
    else:
        params = suggest_hyperparameters(trial, space)
        model = _mlp(params, input_dim=input_dim, n_classes=n_classes)
    params = within_epoch_budget(params, epoch_budget)
    steps_per_epoch = math.ceil(n_samples / params["batch_size"])
    model.compile(
        optimizer=_optimizer(params, learning_rate_schedule(params, steps_per_epoch=steps_per_epoch)),
        loss="sparse_categorical_crossentropy",
        # The objective is cross-entropy without the L2 penalty, so configurations with different
        # L2 strengths are compared on the data alone.
        metrics=[keras.metrics.SparseCategoricalCrossentropy(name="xent"), keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=training.steps_per_execution,
        jit_compile=training.jit_compile,
    )
    return model, params


def _regularizer(params: Mapping[str, Any]) -> keras.regularizers.Regularizer | None:
    import keras

    return keras.regularizers.L2(params["l2"]) if params["l2"] > 0 else None


def _mlp(params: Mapping[str, Any], *, input_dim: int, n_classes: int) -> keras.Model:
    import keras

    regularizer = _regularizer(params)
    inputs = keras.Input(shape=(input_dim,), name="pixels")
    x = inputs
    if params["input_dropout"] > 0:
        x = keras.layers.Dropout(params["input_dropout"], name="input_dropout")(x)
    for index in range(params["n_layers"]):
        x = keras.layers.Dense(params["units"], activation="relu", kernel_regularizer=regularizer, name=f"hidden_{index + 1}")(x)
        if params["dropout"] > 0:
            x = keras.layers.Dropout(params["dropout"], name=f"dropout_{index + 1}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=regularizer, name="classes")(x)
    return keras.Model(inputs, outputs, name="mlp")


def rebuild_model(
    params: Mapping[str, Any],
    *,
    input_dim: int,
    n_classes: int,
    n_samples: int,
    training: TrainingSpec,
    family: str = "mlp",
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """The exact model of a finished trial, from its recorded parameters (for the final training job)."""
    import optuna

    recorded = {**LEGACY_PARAMS, **params} if family == "mlp" else dict(params)
    return build_model(
        optuna.trial.FixedTrial(recorded),
        OPEN_SPACES[family],
        input_dim=input_dim,
        n_classes=n_classes,
        n_samples=n_samples,
        training=training,
        family=family,
        image_shape=image_shape,
    )


def missing_params(params: Mapping[str, Any], family: str) -> list[str]:
    """The parameters a recorded trial of ``family`` lacks to be rebuilt (a trial of another tuner version)."""
    if family == "cnn":
        from tuner.cnn import ARCHITECTURE_PARAMETERS

        needed = [*ARCHITECTURE_PARAMETERS, *_TRAINING_PARAMS]
    else:
        needed = ["n_layers", "optimizer", "learning_rate", "batch_size", "epochs", "l2"] + (
            ["units", "dropout"] if params.get("n_layers") else []
        )
    return [name for name in needed if name not in params]


def check_space_fits_data(
    space: Mapping[str, ParamSpec], family: str, image_shape: tuple[int, int, int] | None, *, source: str, data: str
) -> None:
    """Refuse before the first trial a space that cannot build on this data (a CNN on a table, or pooled too deep)."""
    if family == "cnn":
        from tuner.cnn import check_space_fits_images

        check_space_fits_images(space, image_shape, source=source, data=data)


def learning_rate_schedule(params: Mapping[str, Any], *, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The trial's learning rate over its epoch budget.

    ``cosine``: a linear warm-up over the first epoch (at most 5% of the budget; Goyal et al. 2017),
    then cosine annealing to zero at the end of the budget (Loshchilov & Hutter, SGDR, 2017), so
    every budget ends fully annealed instead of stopping at a constant rate.
    """
    import keras

    if params["schedule"] == "constant":
        return params["learning_rate"]
    total = max(1, params["epochs"] * steps_per_epoch)
    warmup = min(steps_per_epoch, max(1, total // 20))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total - warmup), alpha=0.0, warmup_target=params["learning_rate"], warmup_steps=warmup
    )


def count_params(model: keras.Model) -> int:
    return int(model.count_params())


def _optimizer(params: Mapping[str, Any], learning_rate: Any) -> keras.optimizers.Optimizer:
    """The named optimizer; ``weight_decay`` > 0 adds decoupled weight decay (AdamW, Loshchilov & Hutter 2019)."""
    import keras

    name = params["optimizer"]
    decay = params["weight_decay"] or None  # Keras: None turns it off
    optimizer: keras.optimizers.Optimizer
    if name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, weight_decay=decay)
    elif name == "sgd_momentum":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=decay)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate, weight_decay=decay)
    elif name == "adam":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=decay) if decay else keras.optimizers.Adam(learning_rate)
    else:
        raise ValueError(f"unknown optimizer {name!r}")  # the study file validation makes this unreachable
    if decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])  # decay shrinks weights, not offsets
    return optimizer


def suggest_parameter(trial: optuna.trial.BaseTrial, name: str, spec: ParamSpec) -> Any:
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, FloatRange):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, Choice):
        return trial.suggest_categorical(name, list(spec.choices))
    # A fixed value is still recorded as a one-choice parameter, so every trial states its whole configuration.
    return trial.suggest_categorical(name, [spec.value])
