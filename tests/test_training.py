"""The epoch monitor's contract with the pruner, and the pruner's rungs: which trials set a rung's bar,
and at which epochs a rung judges a trial."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from tuner.records import EPOCH_BUDGET_ATTR, EPOCH_LOG_ATTR
from tuner.search import BudgetedHalvingPruner, BudgetedHyperbandPruner, decides_at, make_pruner
from tuner.studyfile import PrunerSpec
from tuner.training import EpochMonitor


def _train(study: optuna.Study, losses: list[float], **monitor_options) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    monitor = EpochMonitor(trial, **monitor_options)
    monitor.set_model(SimpleNamespace(stop_training=False))
    for epoch, loss in enumerate(losses):
        monitor.on_epoch_end(epoch, {"loss": loss, "val_loss": loss, "val_accuracy": 1 - loss})
    study.tell(trial, monitor.best_loss)
    return study.trials[trial.number]


def _rungs(trial: optuna.trial.FrozenTrial) -> set[str]:
    return {key for key in trial.system_attrs if key.startswith("completed_rung_")}


@pytest.fixture
def study() -> optuna.Study:
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.create_study(pruner=pruner)


def test_a_trial_on_a_shorter_schedule_reports_its_epochs_but_sets_no_rungs_bar(study):
    lead = _train(study, [0.5, 0.1, 0.05], prune=False, sets_bar=False)
    assert lead.intermediate_values == {1: 0.5, 2: 0.1, 3: 0.05}  # its curve is still in the study
    assert _rungs(lead) == set()
    # So a full-schedule trial, slower at epoch 3 than the annealed lead, is measured against its peers only.
    peer = _train(study, [0.5, 0.3, 0.2])
    assert peer.state == optuna.trial.TrialState.COMPLETE and _rungs(peer) == {"completed_rung_0", "completed_rung_1"}


def test_a_portfolio_trial_sets_the_bar_without_being_pruned(study):
    reference = _train(study, [0.5, 0.1, 0.05], prune=False)
    assert _rungs(reference) == {"completed_rung_0", "completed_rung_1"}
    with pytest.raises(optuna.TrialPruned):
        _train(study, [0.5, 0.3, 0.2])  # worse than the reference at epoch 3's rung


def test_a_rung_compares_the_best_loss_so_far_not_one_noisy_epoch(study):
    _train(study, [0.5, 0.1, 0.05], prune=False)
    # At epoch 3 this trial's own loss (0.09) is behind the reference's 0.05, but its best (0.04) is ahead.
    noisy = _train(study, [0.5, 0.04, 0.09, 0.03])
    assert noisy.state == optuna.trial.TrialState.COMPLETE and noisy.value == 0.03
    assert noisy.intermediate_values == {1: 0.5, 2: 0.04, 3: 0.04, 4: 0.03}
    assert [record["val_loss"] for record in noisy.user_attrs[EPOCH_LOG_ATTR]] == [0.5, 0.04, 0.09, 0.03]  # each epoch's own
    with pytest.raises(optuna.TrialPruned, match="best validation loss 0.0600"):
        _train(study, [0.5, 0.06, 0.07])


def _trial_at(step: int, *, epochs: int, budget: int | None = None) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"epochs": epochs},
        distributions={"epochs": optuna.distributions.IntDistribution(1, 100)},
        intermediate_values={s: 0.1 for s in range(1, step + 1)},
        user_attrs={} if budget is None else {EPOCH_BUDGET_ATTR: budget},
        state=optuna.trial.TrialState.RUNNING,
    )


def test_rungs_judge_only_where_a_promoted_trial_goes_on_for_the_reduction_factor_within_its_budget():
    assert [s for s in range(1, 31) if decides_at(_trial_at(s, epochs=30), reduction_factor=3)] == list(range(1, 11))
    assert [s for s in (1, 3, 9) if decides_at(_trial_at(s, epochs=15), reduction_factor=3)] == [1, 3]
    assert [s for s in (1, 3, 9) if decides_at(_trial_at(s, epochs=30, budget=10), reduction_factor=3)] == [1, 3]
    assert [s for s in (1, 4, 16) if decides_at(_trial_at(s, epochs=30), reduction_factor=4)] == [1, 4]


@pytest.mark.parametrize(
    ("kind", "pruner_class", "optuna_class"),
    [
        ("successive_halving", BudgetedHalvingPruner, optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", BudgetedHyperbandPruner, optuna.pruners.HyperbandPruner),
    ],
)
def test_the_halving_pruners_ask_their_rungs_only_where_a_rung_may_judge(kind, pruner_class, optuna_class, monkeypatch):
    asked: list[int] = []

    def always_prune(self, study, trial):
        asked.append(trial.last_step)
        return True

    monkeypatch.setattr(optuna_class, "prune", always_prune)
    pruner = make_pruner(PrunerSpec(kind=kind, min_resource=1, reduction_factor=3), max_epochs=30)
    assert isinstance(pruner, pruner_class)
    study = optuna.create_study()
    assert [step for step in (1, 3, 9, 10, 11, 27, 30) if pruner.prune(study, _trial_at(step, epochs=30))] == [1, 3, 9, 10]
    assert asked == [1, 3, 9, 10]


def test_successive_halving_lets_a_trial_behind_at_epoch_27_finish_where_optunas_would_prune_it():
    pruner = make_pruner(PrunerSpec(kind="successive_halving", min_resource=1, reduction_factor=3), max_epochs=30)
    plain = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(pruner=pruner)
    # A reference that set its value at every rung, epoch 27's included (as Optuna's own halving records it).
    reference = study.ask({"epochs": optuna.distributions.IntDistribution(30, 30)})
    for step in range(1, 31):
        reference.report(0.1, step)
        plain.prune(study, study.trials[reference.number])
    study.tell(reference, 0.1)
    # A trial ahead of it up to epoch 26, then behind it at 27: Optuna's halving would prune it there.
    late = study.ask({"epochs": optuna.distributions.IntDistribution(30, 30)})
    for step in range(1, 27):
        late.report(0.05, step)
        assert not late.should_prune()
    late.report(0.5, 27)
    assert plain.prune(study, study.trials[late.number])
    assert not late.should_prune()  # three annealed epochs left: it finishes
    behind = study.ask({"epochs": optuna.distributions.IntDistribution(30, 30)})
    behind.report(0.5, 1)
    assert behind.should_prune()  # the rungs below still judge


def _reporting(values: list[float]) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"epochs": 30},
        distributions={"epochs": optuna.distributions.IntDistribution(1, 100)},
        intermediate_values=dict(enumerate(values, start=1)),
        state=optuna.trial.TrialState.RUNNING,
    )


@pytest.mark.parametrize("kind", ["successive_halving", "hyperband", "median"])
def test_pruner_patience_holds_off_until_the_best_loss_so_far_stops_improving(kind, monkeypatch):
    # The values a trial reports are its best loss so far, which never gets worse: Optuna's PatientPruner,
    # which waits for a worse value, would never prune such a trial.
    monkeypatch.setattr(optuna.pruners.SuccessiveHalvingPruner, "prune", lambda self, study, trial: True)
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: True)
    pruner = make_pruner(PrunerSpec(kind=kind, min_resource=1, reduction_factor=3, patience=2), max_epochs=30)
    if kind == "hyperband":
        assert isinstance(pruner, optuna.pruners.HyperbandPruner)  # TPE still models each bracket apart
    study = optuna.create_study()
    assert not pruner.prune(study, _reporting([0.5, 0.4, 0.3, 0.2]))  # improving
    assert not pruner.prune(study, _reporting([0.5, 0.3, 0.3]))  # one epoch without improvement
    assert pruner.prune(study, _reporting([0.5, 0.3, 0.3, 0.3]))  # two
    assert not pruner.prune(study, _reporting([0.3, 0.3]))  # too few epochs to tell
    maximizing = optuna.create_study(direction="maximize")
    assert not pruner.prune(maximizing, _reporting([0.5, 0.6, 0.7]))
    assert pruner.prune(maximizing, _reporting([0.5, 0.7, 0.7, 0.7]))
