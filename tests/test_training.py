"""The epoch monitor's contract with the pruner: which trials set a successive-halving rung's bar."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

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
