"""The benchmarks' own logic: how a time-to-accuracy run is scored, how the suite judges its targets,
and that the storage benchmark's bulk-written history is one Optuna reads back as real trials."""

from __future__ import annotations

import optuna
import pytest

from benchmarks.run_all import figures
from benchmarks.storage_scale import EPOCHS, _bookkeeping, _fill, _study
from benchmarks.time_to_accuracy import judge, summarize


def _epochs(*epochs: tuple[float, float, int]) -> list[dict]:
    return [{"time": 1000.0 + seconds, "val_accuracy": accuracy, "trial": trial} for seconds, accuracy, trial in epochs]


def test_time_to_accuracy_counts_the_first_epoch_at_the_target_and_nothing_past_the_limit():
    epochs = _epochs((10, 0.91, 0), (25, 0.975, 1), (55, 0.9801, 0), (40, 0.97, 1), (70, 0.985, 2))
    result = summarize(epochs, launched=1000.0, limit=60, target=0.98)
    assert result["seconds_to_target"] == 55.0
    assert result["best_accuracy"] == 0.9801  # the 98.5% epoch ended after the limit
    assert (result["epochs"], result["trials"]) == (4, 2)
    assert result["best_so_far"] == [[10.0, 0.91], [25.0, 0.975], [55.0, 0.9801]]


def test_time_to_accuracy_reports_a_target_never_reached_as_none():
    result = summarize(_epochs((5, 0.97, 0)), launched=1000.0, limit=60, target=0.98)
    assert result["seconds_to_target"] is None
    assert result["best_accuracy"] == 0.97


def test_time_to_accuracy_judges_medians_and_counts_a_rival_that_never_got_there_as_the_limit():
    def run(seconds, accuracy):
        return {"seconds_to_target": seconds, "best_accuracy": accuracy}

    runs = {
        "tuner": [run(40, 0.981), run(None, 0.979), run(50, 0.982)],
        "optuna": [run(None, 0.975)] * 3,
        "kerastuner": [run(200, 0.98), run(300, 0.981), run(None, 0.979)],
    }
    summary = judge(runs, mode="first", target=0.98, limit=600, data="mnist")
    assert summary["arms"]["tuner"]["median_seconds_to_target"] == 50.0  # the miss counts as infinitely slow
    assert summary["arms"]["optuna"]["median_seconds_to_target"] is None
    assert summary["fastest_rival_median_s"] == 300.0 and summary["tuner_over_fastest_rival"] == pytest.approx(50 / 300, abs=1e-3)
    assert summary["tuner_minus_best_rival_points"] == pytest.approx(0.1)
    alone = judge({"tuner": [run(40, 0.98)], "optuna": [run(None, 0.97)]}, mode="first", target=0.98, limit=600, data="mnist")
    assert alone["tuner_over_fastest_rival"] == pytest.approx(40 / 600, abs=1e-3)


def test_the_suite_judges_each_figure_against_its_target():
    results = {
        "overhead": {
            "trial_overhead": {"ratio_wall": 1.02},
            "wide_model": {"fraction_of_matmul": 0.4},
            "small_model": {"ratio_steady_epoch_wall": 0.7},
        },
        "time_to_accuracy": {
            "target": 0.98,
            "limit_s": 600,
            "arms": {"tuner": {"median_seconds_to_target": 100, "median_best_accuracy": 0.981}},
            "tuner_over_fastest_rival": 0.45,
            "tuner_minus_best_rival_points": 0.1,
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
    assert met["tuner's best accuracy - the better rival's, points"] is False
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
