"""Samplers, pruners and the tutorial's baseline configurations, built from a study spec."""

from __future__ import annotations

from typing import Any

import optuna

from tuner.studyfile import Choice, Fixed, FloatRange, IntRange, PrunerSpec, SamplerSpec, StudySpec

__all__ = ["BASELINES", "make_sampler", "make_pruner", "baseline_params"]

# The classic MNIST tutorial, step by step: softmax regression, two ReLU layers, then dropout and Adam.
BASELINES: tuple[dict[str, Any], ...] = (
    {"n_layers": 0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128},
    {"n_layers": 2, "units": 128, "dropout": 0.0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128},
    {"n_layers": 2, "units": 128, "dropout": 0.3, "optimizer": "adam", "learning_rate": 0.001, "batch_size": 128},
)


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials)


def make_pruner(spec: PrunerSpec, *, max_epochs: int) -> optuna.pruners.BasePruner:
    pruner: optuna.pruners.BasePruner
    if spec.kind == "none":
        return optuna.pruners.NopPruner()
    if spec.kind == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=spec.min_resource, max_resource=max_epochs, reduction_factor=spec.reduction_factor)
    elif spec.kind == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    if spec.patience:
        pruner = optuna.pruners.PatientPruner(pruner, patience=spec.patience)
    return pruner


def baseline_params(spec: StudySpec) -> list[dict[str, Any]]:
    """The baselines fitted into the study's space.

    Fixed parameters keep the study's value; numbers outside a range are clipped into it; a baseline
    whose categorical value the space excludes is dropped. Parameters the baseline does not name
    (epochs, l2, ...) take the space's gentlest value: the most epochs and the least L2.
    """
    fitted = []
    for baseline in BASELINES:
        params = dict(baseline)
        params.setdefault("epochs", _upper(spec.space["epochs"]))
        params.setdefault("l2", _lower(spec.space["l2"]))
        if params["n_layers"] == 0:
            params.pop("units", None)
            params.pop("dropout", None)
        result: dict[str, Any] | None = {}
        for name, value in params.items():
            space = spec.space[name]
            if isinstance(space, Fixed):
                continue
            if isinstance(space, Choice):
                if value not in space.choices:
                    result = None
                    break
                result[name] = value
            else:
                result[name] = type(space.low)(min(max(value, space.low), space.high))
        if result is not None and result not in fitted:
            fitted.append(result)
    return fitted


def _upper(space: Any) -> Any:
    if isinstance(space, (IntRange, FloatRange)):
        return space.high
    return max(space.choices) if isinstance(space, Choice) else space.value


def _lower(space: Any) -> Any:
    if isinstance(space, (IntRange, FloatRange)):
        return space.low
    return min(space.choices) if isinstance(space, Choice) else space.value
