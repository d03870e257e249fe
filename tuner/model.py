"""The one place that turns a trial into a Keras MLP: every ``suggest_*`` call lives here.

``build_model`` takes any Optuna trial, so the final training job rebuilds the exact model of a
finished trial by passing ``optuna.trial.FixedTrial(trial.params)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from tuner.studyfile import OPEN_SPACE, Choice, FloatRange, IntRange, ParamSpec, TrainingSpec

if TYPE_CHECKING:
    import keras
    import optuna

__all__ = ["suggest_hyperparameters", "build_model", "rebuild_model", "count_params"]


def suggest_hyperparameters(trial: "optuna.trial.BaseTrial", space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Draw one configuration; hidden-layer parameters are only drawn when there are hidden layers."""
    params: dict[str, Any] = {}
    params["n_layers"] = _suggest(trial, "n_layers", space["n_layers"])
    if params["n_layers"] > 0:
        params["units"] = _suggest(trial, "units", space["units"])
        params["dropout"] = _suggest(trial, "dropout", space["dropout"])
    else:
        params["units"], params["dropout"] = 0, 0.0
    for name in ("optimizer", "learning_rate", "batch_size", "epochs", "l2"):
        params[name] = _suggest(trial, name, space[name])
    return params


def build_model(
    trial: "optuna.trial.BaseTrial",
    space: Mapping[str, ParamSpec],
    *,
    input_dim: int,
    n_classes: int,
    training: TrainingSpec,
) -> tuple["keras.Model", dict[str, Any]]:
    """Suggest a configuration and return the compiled model with the parameters it was built from."""
    import keras

    params = suggest_hyperparameters(trial, space)
    regularizer = keras.regularizers.L2(params["l2"]) if params["l2"] > 0 else None
    inputs = keras.Input(shape=(input_dim,), name="pixels")
    x = inputs
    for index in range(params["n_layers"]):
        x = keras.layers.Dense(params["units"], activation="relu", kernel_regularizer=regularizer, name=f"hidden_{index + 1}")(x)
        if params["dropout"] > 0:
            x = keras.layers.Dropout(params["dropout"], name=f"dropout_{index + 1}")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=regularizer, name="classes")(x)
    model = keras.Model(inputs, outputs, name="mlp")
    model.compile(
        optimizer=_optimizer(params["optimizer"], params["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        # The objective is cross-entropy without the L2 penalty, so configurations with different
        # L2 strengths are compared on the data alone.
        metrics=[keras.metrics.SparseCategoricalCrossentropy(name="xent"), keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=training.steps_per_execution,
        jit_compile=training.jit_compile,
    )
    return model, params


def rebuild_model(params: Mapping[str, Any], *, input_dim: int, n_classes: int, training: TrainingSpec) -> tuple["keras.Model", dict[str, Any]]:
    """The exact model of a finished trial, from its recorded parameters (for the final training job)."""
    import optuna

    return build_model(optuna.trial.FixedTrial(dict(params)), OPEN_SPACE, input_dim=input_dim, n_classes=n_classes, training=training)


def count_params(model: "keras.Model") -> int:
    return int(model.count_params())


def _optimizer(name: str, learning_rate: float) -> "keras.optimizers.Optimizer":
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    if name == "sgd_momentum":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}")  # the study file validation makes this unreachable


def _suggest(trial: "optuna.trial.BaseTrial", name: str, spec: ParamSpec) -> Any:
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, FloatRange):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, Choice):
        return trial.suggest_categorical(name, list(spec.choices))
    # A fixed value is still recorded as a one-choice parameter, so every trial states its whole configuration.
    return trial.suggest_categorical(name, [spec.value])
