"""The final model's trial: highest validation accuracy, trained to the epoch it was reached."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tuner.records import EPOCH_BUDGET_ATTR, EPOCH_LOG_ATTR, EpochRecord, epoch_budget, trained_params
from tuner.selection import final_epochs, most_accurate


def _trial(value, log=None, *, state=TrialState.COMPLETE, **attrs):
    entries = [
        EpochRecord(epoch=i + 1, time=float(i), val_loss=loss, val_accuracy=accuracy).to_dict()
        for i, (loss, accuracy) in enumerate(log or [])
    ]
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={EPOCH_LOG_ATTR: entries, **attrs} if log else attrs,
    )


def _study(*trials):
    study = optuna.create_study()
    for trial in trials:
        study.add_trial(trial)
    return study


def test_an_overconfident_trial_of_lowest_loss_loses_to_the_more_accurate_one():
    # Lowest loss at epoch 2, then more confident and more accurate; the other trial is better still.
    overconfident = _trial(0.060, [(0.08, 0.975), (0.060, 0.980), (0.070, 0.983), (0.090, 0.982)])
    accurate = _trial(0.065, [(0.09, 0.970), (0.070, 0.981), (0.065, 0.986), (0.066, 0.987)])
    pruned = _trial(None, [(0.05, 0.990)], state=TrialState.PRUNED)  # never a candidate
    study = _study(overconfident, accurate, pruned)
    assert study.best_trial.number == 0  # the search's own best is the lowest loss
    selection = most_accurate(study.trials)
    assert selection is not None
    assert (selection.trial.number, selection.val_accuracy, selection.epoch) == (1, 0.987, 4)
    assert final_epochs(study.trials[0]) == 3  # its accuracy peaked after its loss did


def test_ties_go_to_the_lower_loss_then_the_earlier_trial_and_the_earliest_epoch():
    study = _study(_trial(0.07, [(0.07, 0.98)]), _trial(0.06, [(0.06, 0.98), (0.065, 0.98)]), _trial(0.06, [(0.06, 0.98)]))
    selection = most_accurate(study.trials)
    assert selection is not None
    assert (selection.trial.number, selection.epoch) == (1, 1)


def test_trials_without_an_epoch_log_compete_with_their_recorded_accuracy_and_best_epoch():
    study = _study(_trial(0.05, val_accuracy=0.984, best_epoch=12), _trial(0.06, [(0.06, 0.983)]))
    selection = most_accurate(study.trials)
    assert selection is not None
    assert (selection.trial.number, selection.val_accuracy, selection.epoch) == (0, 0.984, 12)
    assert most_accurate(_study(_trial(None, state=TrialState.FAIL)).trials) is None


def test_a_queued_retry_has_trained_no_epochs_though_it_holds_a_copy_of_its_failed_attempts_log():
    from tuner.curves import accuracy_per_epoch_figure
    from tuner.records import epoch_log

    log = [(0.09, 0.97), (0.07, 0.98)]
    failed = _trial(None, log, state=TrialState.FAIL)
    retry = _trial(None, log, state=TrialState.WAITING)  # RetryHeartbeatStaleTrialCallback copies user attributes
    assert len(epoch_log(failed)) == 2 and epoch_log(retry) == []
    figure = accuracy_per_epoch_figure([failed, retry])
    assert figure is not None and len(figure.data) == 1


def test_a_trial_trained_its_epoch_budget_when_it_was_queued_with_a_shorter_one():
    def trial(**attrs):
        distributions = {"epochs": IntDistribution(1, 30), "x": FloatDistribution(0, 1)}
        params = {"epochs": 30, "x": 0.5}
        return create_trial(state=TrialState.COMPLETE, value=0.1, params=params, distributions=distributions, user_attrs=attrs)

    assert trained_params(trial(**{EPOCH_BUDGET_ATTR: 10})) == {"epochs": 10, "x": 0.5}
    assert trained_params(trial(**{EPOCH_BUDGET_ATTR: 50})) == {"epochs": 30, "x": 0.5}  # a budget never adds epochs
    for unusable in (None, True, 0, "10", 2.5):  # not a budget tuner wrote: the trial trained its parameters
        assert epoch_budget({EPOCH_BUDGET_ATTR: unusable}) is None
        assert trained_params(trial(**{EPOCH_BUDGET_ATTR: unusable})) == {"epochs": 30, "x": 0.5}
