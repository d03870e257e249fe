"""Accuracy against cost, knowing when to stop, and warm starts (library level)."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from tests.helpers import MNIST_SMALL, TINY_STUDY, invoke, objective_value
from tuner.convergence import estimate_convergence
from tuner.errors import ConfigError, StudyNotFoundError
from tuner.pareto import best_within_budget, pareto_front
from tuner.records import EPOCH_BUDGET_ATTR, PORTFOLIO_ATTR, WARM_START_ATTR, epoch_budget, trained_params
from tuner.studyfile import Choice, Fixed, FloatRange, IntRange, ParamSpec
from tuner.warmstart import enqueue_warm_start, warm_start_params

DISTRIBUTIONS = {
    "units": IntDistribution(8, 2048, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
    "learning_rate": FloatDistribution(1e-5, 1.0, log=True),
}


def _trial(value, n_params, latency, units=64, optimizer="adam", lr=1e-3, state=TrialState.COMPLETE):
    return create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"units": units, "optimizer": optimizer, "learning_rate": lr},
        distributions=DISTRIBUTIONS,
        user_attrs={"n_params": n_params, "latency_ms": latency, "val_accuracy": 1 - value if value else None},
    )


def _study(trials, name="s", storage=None):
    study = optuna.create_study(study_name=name, storage=storage)
    for trial in trials:
        study.add_trial(trial)
    return study


def test_pareto_front_keeps_only_undominated_trials():
    study = _study(
        [
            _trial(0.05, 500_000, 0.020),  # most accurate
            _trial(0.08, 100_000, 0.005),  # cheaper
            _trial(0.09, 200_000, 0.010),  # dominated by the one above
            _trial(0.30, 7_850, 0.001),  # softmax regression: cheapest
            _trial(None, 10, 0.0001, state=TrialState.PRUNED),  # pruned trials are not candidates
        ]
    )
    assert [p.number for p in pareto_front(study=study)] == [0, 1, 3]
    assert [p.number for p in pareto_front(study=study, objectives=["val_loss", "params"])] == [0, 1, 3]
    assert [p.number for p in pareto_front(study=study, objectives=["val_loss"])] == [0]
    with pytest.raises(ConfigError, match="unknown objectives"):
        pareto_front(study=study, objectives=["flops"])
    with pytest.raises(StudyNotFoundError, match="no completed trial"):
        pareto_front(study=_study([]))


def test_best_within_budget_picks_the_most_accurate_model_that_fits():
    study = _study([_trial(0.05, 500_000, 0.020), _trial(0.08, 100_000, 0.005), _trial(0.30, 7_850, 0.001)])
    assert best_within_budget(study=study).number == 0
    assert best_within_budget(study=study, max_params=200_000).number == 1
    assert best_within_budget(study=study, max_latency_ms=0.002).number == 2
    with pytest.raises(StudyNotFoundError, match="fits the budget"):
        best_within_budget(study=study, max_params=1000)


def test_convergence_needs_history_then_reports_the_recent_gain():
    improving = _study([_trial(1.0 / (i + 1), 1, 1) for i in range(40)])
    estimate = estimate_convergence(improving, window=10)
    assert not estimate.converged and estimate.recent_gain == pytest.approx(1 / 30 - 1 / 40)
    flat = _study([_trial(0.5 if i < 5 else 0.1, 1, 1) for i in range(40)])
    assert estimate_convergence(flat, window=10).converged and estimate_convergence(flat, window=10).recent_gain == 0
    assert estimate_convergence(_study([_trial(0.1, 1, 1)] * 5), window=10).recent_gain is None


def test_warm_start_params_fit_the_new_space():
    space: dict[str, ParamSpec] = {
        "units": IntRange(16, 256, log=True),
        "optimizer": Choice(("adam", "rmsprop")),
        "learning_rate": Fixed(0.01),
        "dropout": FloatRange(0.0, 0.5),
    }
    assert warm_start_params({"units": 1024, "optimizer": "adam", "learning_rate": 0.5, "l2": 1e-4}, space) == {
        "units": 256,
        "optimizer": "adam",
    }
    assert warm_start_params({"units": 8, "optimizer": "sgd"}, space) == {"units": 16}


def test_enqueue_warm_start_takes_the_top_k_of_another_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    _study(
        [_trial(0.3, 1, 1, units=32), _trial(0.1, 1, 1, units=512), _trial(0.2, 1, 1, units=128, optimizer="sgd")], name="old", storage=url
    )
    new = optuna.create_study(study_name="new", storage=url)
    space: dict[str, ParamSpec] = {
        "units": IntRange(16, 256, log=True),
        "optimizer": Choice(("adam", "sgd")),
        "learning_rate": FloatRange(1e-4, 0.1, log=True),
    }
    result = enqueue_warm_start(study=new, space=space, source_storage_url=url, source_study_name="old", top_k=2)
    assert result.source_trials == (1, 2) and result.enqueued == 2
    waiting = new.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[WARM_START_ATTR] for t in waiting] == ["old#1", "old#2"]
    assert waiting[0].system_attrs["fixed_params"] == {"units": 256, "optimizer": "adam", "learning_rate": 1e-3}
    with pytest.raises(StudyNotFoundError):
        enqueue_warm_start(study=new, space=space, source_storage_url=url, source_study_name="missing", top_k=2)


def test_a_warm_started_lead_trains_the_new_studys_whole_budget_as_a_searched_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    lead = _trial(0.1, 1, 1, units=512)
    lead.set_user_attr(PORTFOLIO_ATTR, "keras-mlp")
    lead.set_user_attr(EPOCH_BUDGET_ATTR, 10)  # the old study's lead trained a third of its budget
    _study([lead], name="old", storage=url)
    new = optuna.create_study(study_name="new", storage=url)
    space: dict[str, ParamSpec] = {"units": IntRange(16, 1024, log=True), "optimizer": Choice(("adam", "sgd"))}
    enqueue_warm_start(study=new, space=space, source_storage_url=url, source_study_name="old", top_k=1)
    (waiting,) = new.get_trials(states=(TrialState.WAITING,))
    # No budget cut (so epoch_budget() is None: the whole budget) and no portfolio mark (so the pruner may stop it).
    assert waiting.user_attrs == {WARM_START_ATTR: "old#0"}
    assert epoch_budget(waiting.user_attrs) is None


# --- the same features through the CLI, on the committed fixture ---------------------------------


@pytest.mark.slow
def test_pareto_command_lists_the_front(cli, trained_study):
    url, name = trained_study
    result = invoke(cli, "pareto", "--storage", url, "--study", name, "--json")
    assert result.exit_code == 0, result.output
    front = json.loads(result.stdout)
    study = optuna.load_study(study_name=name, storage=url)
    assert [p["number"] for p in front] == [p.number for p in pareto_front(study=study)]
    assert all(p["latency_ms"] > 0 and p["n_params"] > 0 for p in front)
    table = invoke(cli, "pareto", "--storage", url, "--objectives", "val_loss,params")
    assert table.exit_code == 0 and "Pareto front" in table.stdout
    bad = invoke(cli, "pareto", "--storage", url, "--objectives", "speed")
    assert bad.exit_code == 2 and "unknown objectives" in bad.stderr


@pytest.mark.slow
def test_export_within_a_parameter_budget(cli, study_copy, tmp_path):
    url, name = study_copy
    study = optuna.load_study(study_name=name, storage=url)
    cheapest = min(t.user_attrs["n_params"] for t in study.get_trials(states=(TrialState.COMPLETE,)))
    expected = best_within_budget(study=study, max_params=cheapest)
    result = invoke(cli, "export-best", "--storage", url, "--max-params", cheapest, "--out", tmp_path / "small", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "small" / "model.json").read_text())
    assert record["trial_number"] == expected.number and record["params"] == trained_params(expected)
    too_small = invoke(cli, "export-best", "--storage", url, "--max-params", 10, "--out", tmp_path / "none")
    assert too_small.exit_code == 4 and "fits the budget" in too_small.stderr and not (tmp_path / "none").exists()
    both = invoke(cli, "export-best", "--storage", url, "--max-params", 10, "--trial", 0, "--out", tmp_path / "x")
    assert both.exit_code == 2 and "cannot be combined" in both.stderr


@pytest.mark.slow
def test_warm_start_from_another_study(cli, trained_study, tiny_study_file, tmp_path):
    url, name = trained_study
    new_url = f"sqlite:///{tmp_path / 'warm.db'}"
    result = invoke(
        cli,
        "run",
        "--trials",
        3,
        "--study",
        "warm",
        "--study-file",
        tiny_study_file,
        "--data",
        MNIST_SMALL,
        "--storage",
        new_url,
        "--warm-start-from",
        name,
        "--warm-start-storage",
        url,
        "--top",
        2,
    )
    assert result.exit_code == 0, result.output
    assert "warm start: enqueued the 2 best configurations" in result.stderr
    source = sorted(optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.COMPLETE,)), key=objective_value)[:2]
    trials = optuna.load_study(study_name="warm", storage=new_url).get_trials()
    assert [t.user_attrs.get(WARM_START_ATTR) for t in trials[:2]] == [f"{name}#{t.number}" for t in source]
    assert trials[0].params == source[0].params
    assert len(trials) == 3  # the portfolio and baselines follow, within the total
    missing = invoke(
        cli,
        "run",
        "--trials",
        1,
        "--study",
        "w2",
        "--study-file",
        tiny_study_file,
        "--data",
        MNIST_SMALL,
        "--storage",
        new_url,
        "--warm-start-from",
        "nope",
    )
    assert missing.exit_code == 4 and "no study named 'nope'" in missing.stderr


@pytest.mark.slow
def test_until_converged_stops_early_and_says_so(cli, tmp_path, sqlite_url):
    study_file = tmp_path / "converge.toml"
    study_file.write_text(TINY_STUDY.replace('name = "tiny"', 'name = "tiny"\nconvergence_window = 2\nconvergence_tolerance = 0.9'))
    result = invoke(
        cli,
        "run",
        "--trials",
        30,
        "--study-file",
        study_file,
        "--data",
        MNIST_SMALL,
        "--storage",
        sqlite_url,
        "--until-converged",
        "--no-baselines",
    )
    assert result.exit_code == 0, result.output
    assert "stopped early: converged" in result.stdout
    n = len(optuna.load_study(study_name="tiny", storage=sqlite_url).get_trials())
    assert 4 <= n < 30
    listing = invoke(cli, "studies", "--storage", sqlite_url)
    assert "converged" in listing.stdout
