"""The benchmarks' own logic: how a time-to-accuracy run is scored, how the suite judges its targets,
and that the storage benchmark's bulk-written history is one Optuna reads back as real trials."""

from __future__ import annotations

import optuna
import pytest

from benchmarks.run_all import figures
from benchmarks.storage_scale import EPOCHS, _bookkeeping, _fill, _study
from benchmarks.time_to_accuracy import summarize


def _events(*trials: tuple[float, float | None, str]) -> list[dict]:
    start = 1000.0
    return [{"event": "start", "time": start}] + [
        {"event": "trial", "time": start + seconds, "accuracy": accuracy, "state": state} for seconds, accuracy, state in trials
    ]


def test_time_to_accuracy_counts_the_first_trial_at_the_target_and_nothing_past_the_budget():
    events = _events((10, 0.91, "COMPLETE"), (25, None, "FAIL"), (40, 0.975, "PRUNED"), (55, 0.9801, "COMPLETE"), (70, 0.985, "COMPLETE"))
    result = summarize(events, budget=60, target=0.98, exit_code=-15)
    assert result["seconds_to_target"] == 55.0
    assert result["best_accuracy"] == 0.9801  # the 98.5% trial ended after the budget
    assert result["trials_finished"] == 4
    assert result["pruned"] == 1
    assert result["best_so_far"] == [[10.0, 0.91], [40.0, 0.975], [55.0, 0.9801]]


def test_time_to_accuracy_reports_a_target_never_reached_as_none():
    result = summarize(_events((5, 0.97, "COMPLETE")), budget=60, target=0.98, exit_code=-15)
    assert result["seconds_to_target"] is None
    assert result["best_accuracy"] == 0.97


def test_the_suite_judges_each_figure_against_its_target():
    results = {
        "overhead": {
            "trial_overhead": {"ratio_wall": 1.02},
            "wide_model": {"fraction_of_matmul": 0.4},
            "small_model": {"ratio_steady_epoch_wall": 0.7},
        },
        "time_to_accuracy": {
            "target": 0.98,
            "budget_s": 600,
            "arms": {"tuner": {"seconds_to_target": 100, "best_accuracy": 0.981}},
            "tuner_over_fastest_rival": 0.45,
            "tuner_best_is_highest": False,
        },
        "memory": {"trials": 200, "growth_mb_after_trial_10": 151.0},
        "storage_scale": {"backends": {"sqlite": {"10000": {"ms_per_trial_median": 49.0}}, "postgresql": {"skipped": "no server"}}},
        "pruning": {"error": "exit code 1"},
    }
    met = {row["figure"]: row["met"] for row in figures(results)}
    assert met["tuner trial / plain model.fit, s per epoch"] is True
    assert met["wide model FLOP rate / numpy matmul rate"] is False
    assert met["small model epoch, tuner settings / Keras defaults"] is False
    assert met["tuner time / faster rival's time"] is True
    assert met["tuner ends with the highest accuracy"] is False
    assert met["RSS growth after trial 10 over 200 trials, MB"] is False
    assert met["sqlite: bookkeeping ms per trial at 10000 trials"] is True
    assert met["postgresql: skipped"] is None
    assert met["pruning failed"] is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_storage_history_written_in_bulk_reads_back_as_optuna_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'scale.db'}"
    study = _study(url)
    _fill(study, 40)
    timings = _bookkeeping(study, 2)

    loaded = optuna.load_study(study_name="scale", storage=url)
    trials = loaded.get_trials()
    assert [t.number for t in trials] == list(range(42))
    history = trials[:40]
    states = {t.state for t in history}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for trial in history:
        assert trial.params["optimizer"] in ("sgd", "sgd_momentum", "rmsprop", "adam")
        assert len(trial.intermediate_values) == (EPOCHS if trial.state == optuna.trial.TrialState.COMPLETE else 2)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.value == pytest.approx(min(trial.intermediate_values.values()))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials[40:])
    assert len(timings) == 2 and all(wall > 0 and cpu >= 0 for wall, cpu in timings)
