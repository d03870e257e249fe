"""Samplers, pruners and the tutorial's baseline configurations, built from a study spec."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tuner.provenance import trial_seed
from tuner.records import trained_params
from tuner.studyfile import Choice, Fixed, FloatRange, IntRange, PrunerSpec, SamplerSpec, StudySpec, fit_into_range
from tuner.warmstart import warm_start_params

__all__ = [
    "BASELINES",
    "PORTFOLIO",
    "CNN_PORTFOLIO",
    "PORTFOLIOS",
    "PortfolioEntry",
    "LEAD_BUDGET_SHARE",
    "BASELINE_BUDGET_SHARE",
    "share_of_epoch_budget",
    "BudgetedHalvingPruner",
    "BudgetedHyperbandPruner",
    "StallGatedPruner",
    "has_stalled",
    "decides_at",
    "TrialSeededSampler",
    "make_sampler",
    "make_pruner",
    "baseline_params",
    "portfolio_params",
]


@dataclass(frozen=True)
class PortfolioEntry:
    """A published recipe. ``budget_share`` < 1 trains it for that share of the study's epoch budget,
    its schedule annealed over those epochs: a finished model sooner than the full budget gives one."""

    name: str
    source: str
    params: Mapping[str, Any]
    budget_share: float = 1.0

    def epoch_budget(self, max_epochs: int) -> int | None:
        """The epochs this entry trains in a study whose budget is ``max_epochs``; None for the whole budget."""
        return share_of_epoch_budget(self.budget_share, max_epochs)


def share_of_epoch_budget(share: float, max_epochs: int) -> int | None:
    """``share`` of a study's epoch budget, rounded up; None for the whole budget."""
    if share >= 1:
        return None
    return max(1, math.ceil(share * max_epochs))


# The lead (each portfolio's first entry, the study's first trial) trains a third of the epoch budget:
# a schedule that anneals to zero at the end of whatever budget it is given yields the best model for
# that budget (Li, Yumer & Ramanan 2020, 'Budgeted Training', ICLR), so a third of the budget brings a
# finished, annealed model three times sooner. A third: one rung below the full budget in the default
# successive-halving ladder (reduction factor 3).
LEAD_BUDGET_SHARE = 1 / 3

# The tutorial's baselines are reference points, not candidates: they train the lead's share of the budget,
# annealed over it (softmax regression and the small SGD nets are near their best by then). On the full
# budget they reached each rung first and alone, so halving promoted them to the end: a minute of a
# worker's time in a 900 s run on 2 cores, for models no search keeps.
BASELINE_BUDGET_SHARE = LEAD_BUDGET_SHARE


# Strong, dataset-agnostic starting points, run first in a new study and never pruned (see the README's
# "Where the defaults come from"). Neither is tuned to a dataset: each is a published recipe, trained
# with the cosine schedule every trial uses.
PORTFOLIO: tuple[PortfolioEntry, ...] = (
    PortfolioEntry(
        name="keras-mlp",
        budget_share=LEAD_BUDGET_SHARE,
        source="Keras' MNIST MLP example (keras-team/keras examples/mnist_mlp.py): 2 x 512 ReLU, dropout 0.2, RMSprop 1e-3, batch 128",
        params={
            "n_layers": 2,
            "units": 512,
            "input_dropout": 0.0,
            "dropout": 0.2,
            "optimizer": "rmsprop",
            "learning_rate": 1e-3,
            "batch_size": 128,
            "weight_decay": 0.0,
        },
    ),
    PortfolioEntry(
        name="dropout-mlp",
        source=(
            "Srivastava et al. 2014, 'Dropout', JMLR 15: wide ReLU layers with dropout 0.5, inputs dropped at 0.2;"
            " trained with Adam 1e-3, batch 128, as Kingma & Ba 2015 (section 6.2) trained such a net;"
            " decoupled weight decay 0.01 (Loshchilov & Hutter 2019; PyTorch's AdamW default)"
        ),
        params={
            "n_layers": 2,
            "units": 1024,
            "input_dropout": 0.2,
            "dropout": 0.5,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 128,
            "weight_decay": 0.01,
        },
    ),
)

# The convolutional family's starting points ([model] family = "cnn"): Keras' own MNIST convnet and the
# same network with batch normalisation and a dense head. Both use "same" padding (tuner.cnn), where the
# example pads nothing: the same layers, with 7x7 rather than 5x5 maps before the classifier.
CNN_PORTFOLIO: tuple[PortfolioEntry, ...] = (
    PortfolioEntry(
        name="keras-convnet",
        budget_share=LEAD_BUDGET_SHARE,
        source=(
            "Keras' 'Simple MNIST convnet' example (keras-team/keras-io examples/vision/mnist_convnet.py): conv 32 3x3 + max-pool,"
            " conv 64 3x3 + max-pool, flatten, dropout 0.5, softmax; Adam 1e-3, batch 128, 15 epochs"
        ),
        params={
            "n_blocks": 2,
            "filters": 32,
            "filter_growth": "double",
            "kernel_size": 3,
            "batch_norm": False,
            "pooling": "max",
            "head": "flatten",
            "dense_units": 0,
            "dropout": 0.5,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 128,
            "weight_decay": 0.0,
        },
    ),
    PortfolioEntry(
        name="keras-convnet-bn",
        source=(
            "the same two blocks with batch normalisation after each convolution (Ioffe & Szegedy 2015, ICML) and a"
            " 128-unit dense head with dropout 0.5 (keras-team/keras examples/mnist_cnn.py, Keras 2); Adam 1e-3, batch 128"
        ),
        params={
            "n_blocks": 2,
            "filters": 32,
            "filter_growth": "double",
            "kernel_size": 3,
            "batch_norm": True,
            "pooling": "max",
            "head": "flatten",
            "dense_units": 128,
            "dropout": 0.5,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "batch_size": 128,
            "weight_decay": 0.0,
        },
    ),
)

PORTFOLIOS: Mapping[str, tuple[PortfolioEntry, ...]] = {"mlp": PORTFOLIO, "cnn": CNN_PORTFOLIO}

# The classic MNIST tutorial, step by step: softmax regression, two ReLU layers, then dropout and Adam.
BASELINES: tuple[dict[str, Any], ...] = (
    {"n_layers": 0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128},
    {"n_layers": 2, "units": 128, "dropout": 0.0, "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 128},
    {"n_layers": 2, "units": 128, "dropout": 0.3, "optimizer": "adam", "learning_rate": 0.001, "batch_size": 128},
)


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    # Optuna 5's TPE is multivariate and, with constant_liar, lets parallel workers avoid each other's
    # running trials (both on by default); group=True models conditional parameters (units and the
    # dropouts exist only with hidden layers) in their own groups instead of ignoring them.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group=True, stable since Optuna 2.8
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials, group=True, constant_liar=True)


def make_pruner(spec: PrunerSpec, *, max_epochs: int) -> optuna.pruners.BasePruner:
    pruner: optuna.pruners.BasePruner
    if spec.kind == "none":
        return optuna.pruners.NopPruner()
    if spec.kind == "hyperband":
        # Patience inside, not a wrapper around it: TPE must still see a HyperbandPruner.
        return BudgetedHyperbandPruner(
            min_resource=spec.min_resource, max_resource=max_epochs, reduction_factor=spec.reduction_factor, patience=spec.patience
        )
    if spec.kind == "successive_halving":
        pruner = BudgetedHalvingPruner(min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
    return StallGatedPruner(pruner, patience=spec.patience) if spec.patience else pruner


def has_stalled(study: optuna.Study, trial: FrozenTrial, *, patience: int) -> bool:
    """Whether the trial's best value has not improved over its last ``patience`` epochs.

    Optuna's PatientPruner asks instead whether the last epochs were *worse* than the best before them;
    a trial here reports its best value so far (training.EpochMonitor), which never gets worse, so
    that pruner would never let the pruner it wraps act.
    """
    values = [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
    if len(values) <= patience:
        return False
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    earlier = [v for v in values[:-patience] if not math.isnan(v)]
    recent = [v for v in values[-patience:] if not math.isnan(v)]
    if not earlier or not recent:
        return False
    return pick(earlier) == pick(earlier + recent)


class StallGatedPruner(optuna.pruners.BasePruner):
    """``[pruner] patience``: a trial is pruned only when its pruner says so *and* it has stalled
    (``has_stalled``). The wrapped pruner is asked at every epoch all the same, so that an improving
    trial still sets the bar at a halving rung."""

    def __init__(self, wrapped: optuna.pruners.BasePruner, *, patience: int) -> None:
        self._wrapped = wrapped
        self._patience = patience

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self._wrapped.prune(study, trial) and has_stalled(study, trial, patience=self._patience)


def decides_at(trial: FrozenTrial, *, reduction_factor: int) -> bool:
    """Whether a halving rung may judge ``trial`` at its last epoch: only if a promoted trial goes on for
    at least ``reduction_factor`` times its epochs so far, within its own epoch budget.

    Optuna's halving has no maximum resource: with a 30-epoch budget and a factor of 3 it also judges at
    epoch 27, where a promoted trial has 3 epochs left, and pruning there throws away the annealed end
    of its schedule, the epochs that make its best model, to save a tenth of its cost. In ASHA (Li et
    al. 2020, Algorithm 2) a trial at the top rung below the maximum resource R is finished, not judged
    again: the decisions fall at ``min_resource * factor**k`` while ``factor`` times that step is at most
    R (epochs 1, 3 and 9 of 30; 1 and 3 of 15).
    """
    step = trial.last_step
    budget = trained_params(trial).get("epochs")
    return step is None or not isinstance(budget, int) or step * reduction_factor <= budget


class BudgetedHalvingPruner(optuna.pruners.SuccessiveHalvingPruner):
    """Asynchronous successive halving that judges a trial only where ``decides_at`` allows."""

    def __init__(self, *, min_resource: int, reduction_factor: int) -> None:
        super().__init__(min_resource=min_resource, reduction_factor=reduction_factor)
        self._factor = reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return decides_at(trial, reduction_factor=self._factor) and super().prune(study, trial)


class BudgetedHyperbandPruner(optuna.pruners.HyperbandPruner):
    """Hyperband whose brackets judge a trial only where ``decides_at`` allows. A subclass, not a wrapper:
    TPE models each bracket's trials apart only when the study's pruner is a ``HyperbandPruner``, so
    ``patience`` (as ``StallGatedPruner``) is applied in here rather than around it."""

    def __init__(self, *, min_resource: int, max_resource: int, reduction_factor: int, patience: int = 0) -> None:
        super().__init__(min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor)
        self._factor = reduction_factor
        self._patience = patience

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        judged = decides_at(trial, reduction_factor=self._factor) and super().prune(study, trial)
        return judged and (not self._patience or has_stalled(study, trial, patience=self._patience))


def portfolio_params(spec: StudySpec) -> list[tuple[PortfolioEntry, dict[str, Any]]]:
    """The portfolio fitted into the study's space, as a warm start is: fixed parameters keep the
    study's value, numbers are clipped into their range, a categorical value the space lacks is left
    to the sampler. The epoch budget is the space's largest and L2 its smallest, as for the baselines."""
    fitted: list[tuple[PortfolioEntry, dict[str, Any]]] = []
    for entry in PORTFOLIOS[spec.family]:
        params = {"epochs": _upper(spec.space["epochs"]), "l2": _lower(spec.space["l2"]), "schedule": "cosine", **entry.params}
        configuration = warm_start_params(params, spec.space)
        if configuration and all(configuration != seen for _, seen in fitted):  # a fixed space leaves nothing to start from
            fitted.append((entry, configuration))
    return fitted


def baseline_params(spec: StudySpec) -> list[dict[str, Any]]:
    """The baselines fitted into the study's space.

    Fixed parameters keep the study's value; numbers outside a range are clipped into it; a baseline
    whose categorical value the space excludes is dropped. Parameters the baseline does not name
    (epochs, l2, ...) take the space's gentlest value: the most epochs and the least L2. The tutorial's
    models are MLPs: a study of another family has no baselines (its portfolio is its reference).
    """
    if spec.family != "mlp":
        return []
    fitted = []
    for baseline in BASELINES:
        params = dict(baseline)
        params.setdefault("epochs", _upper(spec.space["epochs"]))
        params.setdefault("l2", _lower(spec.space["l2"]))
        params.setdefault("weight_decay", _lower(spec.space["weight_decay"]))
        if params["n_layers"] == 0:
            params.pop("units", None)
            params.pop("dropout", None)
        else:
            params.setdefault("input_dropout", _lower(spec.space["input_dropout"]))
        result = _fit_into_space(params, spec)
        if result is not None and result not in fitted:
            fitted.append(result)
    return fitted


def _fit_into_space(params: dict[str, Any], spec: StudySpec) -> dict[str, Any] | None:
    """The parameters the space searches, clipped into its ranges; None if a categorical value is not on offer."""
    result: dict[str, Any] = {}
    for name, value in params.items():
        space = spec.space[name]
        if isinstance(space, Fixed):
            continue
        if isinstance(space, Choice):
            if value not in space.choices:
                return None
            result[name] = value
        else:
            result[name] = fit_into_range(space, value)
    return result


def _upper(space: Any) -> Any:
    if isinstance(space, (IntRange, FloatRange)):
        return space.high
    return max(space.choices) if isinstance(space, Choice) else space.value


def _lower(space: Any) -> Any:
    if isinstance(space, (IntRange, FloatRange)):
        return space.low
    return min(space.choices) if isinstance(space, Choice) else space.value


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """The study's sampler, seeded afresh for every trial with (seed + trial number).

    Workers that share a study then never propose the same parameters (a shared seed would make every
    worker draw the same "random" startup trials), and a resumed study does not replay its first draws,
    while one worker with one seed stays reproducible.
    """

    def __init__(self, spec: SamplerSpec) -> None:
        self._spec = spec
        self._inner = make_sampler(spec)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = make_sampler(replace(self._spec, seed=trial_seed(self._spec.seed, trial.number)))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
