"""`tuner run` and `tuner studies` end to end, in-process, checked through the database."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import MNIST_SMALL, TINY_STUDY, invoke
from tuner.records import EPOCH_BUDGET_ATTR, FAIL_REASON_ATTR, epoch_log, trained_params
from tuner.search import BASELINE_BUDGET_SHARE, baseline_params, portfolio_params, share_of_epoch_budget
from tuner.studyfile import load_study_file

PARAMS = {
    "n_layers",
    "units",
    "input_dropout",
    "dropout",
    "optimizer",
    "learning_rate",
    "schedule",
    "batch_size",
    "epochs",
    "l2",
    "weight_decay",
}


def _trials(url, name="tiny"):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.mark.slow
def test_run_records_trials_baselines_and_pruning(cli, tiny_study_file, sqlite_url):
    # How long this takes (under 120 s) is measured by benchmarks/wall_clock.py, not asserted here.
    result = invoke(cli, "run", "--trials", 8, "--study-file", tiny_study_file, "--storage", sqlite_url, "--data", MNIST_SMALL)
    assert result.exit_code == 0, result.output
    assert "8/8 finished" in result.stdout and "best trial #" in result.stdout
    trials = _trials(sqlite_url)
    assert [t.number for t in trials] == list(range(8))
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert states.count(TrialState.PRUNED) >= 1
    assert states.count(TrialState.COMPLETE) >= 2  # the pruner's startup trials always complete
    spec = load_study_file(path=tiny_study_file)
    portfolio = portfolio_params(spec)
    for trial, (entry, params) in zip(trials, portfolio, strict=False):  # the portfolio first, never pruned
        assert trial.user_attrs.get("portfolio") == entry.name and trial.state == TrialState.COMPLETE
        assert {k: trial.params[k] for k in params} == params
        budget = entry.epoch_budget(spec.max_epochs)  # the lead's: a third of the budget; the others train all of it
        assert trial.user_attrs.get(EPOCH_BUDGET_ATTR) == budget
        assert trial.user_attrs["epochs_trained"] == trained_params(trial)["epochs"] == (budget or trial.params["epochs"])
    for trial, baseline in zip(trials[len(portfolio) :], baseline_params(spec), strict=False):  # then the tutorial's baselines
        assert trial.user_attrs.get("baseline") is True
        assert trial.user_attrs[EPOCH_BUDGET_ATTR] == share_of_epoch_budget(BASELINE_BUDGET_SHARE, spec.max_epochs)
        assert trial.user_attrs["epochs_trained"] == trained_params(trial)["epochs"]  # reference points: never pruned
        assert {k: trial.params[k] for k in baseline} == baseline
    for trial in trials:
        assert set(trial.params) <= PARAMS and {"n_layers", "optimizer", "learning_rate", "batch_size", "epochs", "l2"} <= set(trial.params)
        assert trial.user_attrs["n_params"] > 0 and trial.user_attrs["train_seconds"] > 0
    for trial in (t for t in trials if t.state == TrialState.COMPLETE):
        log = epoch_log(trial)
        assert [r.epoch for r in log] == list(range(1, trial.user_attrs["epochs_trained"] + 1))
        best_so_far = list(itertools.accumulate((r.val_loss for r in log), min))
        assert best_so_far == pytest.approx([trial.intermediate_values[r.epoch] for r in log])  # what the pruner compares
        assert all(t0 < t1 for t0, t1 in itertools.pairwise(r.time for r in log))
        assert max(r.val_accuracy for r in log) >= trial.user_attrs["val_accuracy"]
        assert trial.value == pytest.approx(trial.user_attrs["val_loss"])
        assert 0.0 < trial.user_attrs["val_accuracy"] <= 1.0
        assert 1 <= trial.user_attrs["best_epoch"] <= trial.params["epochs"]
        assert min(trial.intermediate_values.values()) == pytest.approx(trial.value)


@pytest.mark.slow
def test_the_lead_on_its_shorter_schedule_sets_no_successive_halving_bar(cli, tmp_path, sqlite_url):
    study_file = tmp_path / "halving.toml"
    pruner = 'kind = "successive_halving"\nmin_resource = 1\nreduction_factor = 3'
    study_file.write_text(
        TINY_STUDY.replace('kind = "median"\nn_startup_trials = 2\nn_warmup_steps = 0', pruner).replace(
            "epochs = { low = 2, high = 3 }", "epochs = 3"
        )
    )
    args = ("--trials", 2, "--study-file", study_file, "--storage", sqlite_url, "--data", MNIST_SMALL, "--no-baselines")
    assert invoke(cli, "run", *args).exit_code == 0
    lead, full = _trials(sqlite_url)

    def rungs(trial):
        return sorted(key for key in trial.system_attrs if key.startswith("completed_rung_"))

    assert lead.user_attrs[EPOCH_BUDGET_ATTR] == 1 and list(lead.intermediate_values) == [1]  # reported, for its curve
    assert rungs(lead) == []  # but annealed within one epoch: no rung compares the others with it
    assert EPOCH_BUDGET_ATTR not in full.user_attrs
    assert rungs(full) == ["completed_rung_0"]  # epoch 1 of 3; epoch 3 is its end, where no rung judges


@pytest.mark.slow
def test_resume_stops_at_the_total(cli, tiny_study_file, sqlite_url):
    args = ("--study-file", tiny_study_file, "--storage", sqlite_url, "--data", MNIST_SMALL, "--no-baselines")
    assert invoke(cli, "run", "--trials", 3, *args).exit_code == 0
    second = invoke(cli, "run", "--trials", 5, *args)
    assert second.exit_code == 0, second.output
    assert "resuming: 3 of 5" in second.stderr
    assert len(_trials(sqlite_url)) == 5
    third = invoke(cli, "run", "--trials", 5, *args)
    assert third.exit_code == 0 and len(_trials(sqlite_url)) == 5
    assert not any(t.user_attrs.get("baseline") for t in _trials(sqlite_url))


@pytest.mark.slow
def test_environment_settings_and_flags_take_precedence(cli, tiny_study_file, tmp_path):
    env_url = f"sqlite:///{tmp_path / 'env.db'}"
    flag_url = f"sqlite:///{tmp_path / 'flag.db'}"
    env = {"TUNER_STORAGE": env_url, "TUNER_DATA": str(MNIST_SMALL), "TUNER_STUDY_FILE": str(tiny_study_file), "TUNER_STUDY": "from-env"}
    assert invoke(cli, "run", "--trials", 1, "--no-baselines", env=env).exit_code == 0
    assert len(_trials(env_url, "from-env")) == 1
    assert invoke(cli, "run", "--trials", 1, "--no-baselines", "--storage", flag_url, "--study", "from-flag", env=env).exit_code == 0
    assert len(_trials(flag_url, "from-flag")) == 1
    listing = invoke(cli, "studies", env=env)
    assert listing.exit_code == 0 and "from-env" in listing.stdout and "from-flag" not in listing.stdout


@pytest.mark.slow
def test_studies_prints_a_long_name_whole_and_as_json(cli, tiny_study_file, sqlite_url):
    long_name = "a study name long enough to be wrapped by a narrow table " * 2
    args = ("--study-file", tiny_study_file, "--storage", sqlite_url, "--data", MNIST_SMALL, "--no-baselines")
    assert invoke(cli, "run", "--trials", 1, "--study", long_name, *args).exit_code == 0
    table = invoke(cli, "studies", "--storage", sqlite_url)
    assert table.exit_code == 0 and long_name in table.stdout
    listing = invoke(cli, "studies", "--storage", sqlite_url, "--json")
    assert listing.exit_code == 0, listing.output
    (info,) = json.loads(listing.stdout)
    assert info["name"] == long_name and info["n_trials"] == 1 and info["n_complete"] + info["n_pruned"] + info["n_fail"] == 1


@pytest.mark.slow
def test_a_diverging_trial_is_pruned_with_its_reason_so_the_sampler_learns_and_the_study_goes_on(cli, tmp_path, sqlite_url):
    study_file = tmp_path / "explode.toml"
    study_file.write_text(
        TINY_STUDY.replace('optimizer = { choices = ["sgd", "sgd_momentum", "rmsprop", "adam"] }', 'optimizer = "sgd"')
        .replace("learning_rate = { low = 1e-4, high = 0.3, log = true }", "learning_rate = 10.0")
        .replace("n_layers = { low = 0, high = 2 }", "n_layers = 2")
        .replace("l2 = { low = 1e-8, high = 1e-3, log = true }", "l2 = 1.0")  # each step multiplies the weights by -19
    )
    args = ("--study-file", study_file, "--storage", sqlite_url, "--data", MNIST_SMALL, "--no-baselines", "--no-portfolio", "-v")
    result = invoke(cli, "run", "--trials", 2, *args)
    assert result.exit_code == 0, result.output
    trials = _trials(sqlite_url)
    # PRUNED, not FAIL: TPE ranks pruned trials by their last intermediate value (infinite here) and
    # steers away from the region; a failed trial would be invisible to it.
    assert len(trials) == 2 and all(t.state == TrialState.PRUNED for t in trials)
    assert all(math.isinf(max(t.intermediate_values.values())) for t in trials)
    assert all(re.search(r"loss became (nan|inf) at epoch 1", t.user_attrs["diverged"]) for t in trials)
    assert FAIL_REASON_ATTR not in trials[0].user_attrs
    assert "loss became" in result.output  # -v shows why


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--trials", "0"), 2, "--trials must be at least 1"),
        (("--study-file", "missing.toml"), 2, "study file not found"),
        (("--data", "/nonexistent/mnist"), 3, "data path not found"),
        (
            ("--storage", "postgresql+psycopg2://tuner:secret@127.0.0.1:1/none"),
            4,
            "cannot open storage postgresql database 'none' on 127.0.0.1:1",
        ),
        (("--storage", "nonsense"), 2, "invalid storage URL"),
    ],
)
def test_configuration_errors_stop_before_any_trial(cli, tmp_path, tiny_study_file, args, code, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = {"--study-file": str(tiny_study_file), "--data": str(MNIST_SMALL), "--storage": f"sqlite:///{tmp_path / 'x.db'}"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in base.items() for item in pair]
    result = invoke(cli, "run", "--trials", base.pop("--trials", "3") if "--trials" in args else "3", *flat)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and words in lines[-1], result.stderr
    assert "secret" not in result.output
    if (tmp_path / "x.db").exists():
        assert optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'x.db'}") == [] or not _trials(f"sqlite:///{tmp_path / 'x.db'}")


def test_studies_on_missing_database_does_not_create_it(cli, tmp_path):
    result = invoke(cli, "studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 4 and "no study database" in result.stderr
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_default_storage_is_a_file_in_the_working_directory(cli, tiny_study_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(cli, "run", "--trials", 1, "--study-file", tiny_study_file, "--data", MNIST_SMALL, "--no-baselines")
    assert result.exit_code == 0
    assert (tmp_path / "tuner.db").is_file()
    assert f"SQLite file {tmp_path / 'tuner.db'}" in result.stderr.replace("\n", "")


@pytest.mark.slow
def test_help_and_studies_do_not_import_tensorflow():
    code = (
        "import sys; from tuner.cli import main; from tuner import storage, config, runner; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    subprocess.run([sys.executable, "-m", "tuner", "--help"], check=True, capture_output=True)  # its time: benchmarks/wall_clock.py


@pytest.mark.slow
def test_ctrl_c_marks_the_running_trial_failed_and_exits_with_a_resume_hint(tmp_path, tiny_study_file):
    url = f"sqlite:///{tmp_path / 'interrupt.db'}"
    slow = tmp_path / "slow.toml"
    slow.write_text(
        TINY_STUDY.replace("epochs = { low = 2, high = 3 }", "epochs = 200").replace("[training]\npatience = 2", "[training]\npatience = 0")
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuner",
            "run",
            "--trials",
            "5",
            "--study-file",
            str(slow),
            "--storage",
            url,
            "--data",
            str(MNIST_SMALL),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            trials = optuna.load_study(study_name="tiny", storage=url).get_trials(deepcopy=False)
        except Exception:
            continue
        if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Resume with: tuner run --trials 5" in stderr
    states = [t.state for t in _trials(url)]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states


@pytest.mark.slow
def test_a_database_error_after_opening_is_one_line_and_exit_4(cli, trained_study, tmp_path):
    import sqlite3

    url, name = trained_study
    damaged = tmp_path / "damaged.db"
    with sqlite3.connect(url.removeprefix("sqlite:///")) as source, sqlite3.connect(damaged) as copy:
        source.backup(copy)  # (a file copy would miss what is still in the write-ahead log)
        copy.execute("ALTER TABLE trials DROP COLUMN datetime_start")  # the storage still opens; reading its trials fails
    for args in (["studies"], ["report", "--study", name, "--out", str(tmp_path / "r.html")], ["pareto", "--study", name]):
        result = invoke(cli, *args, "--storage", f"sqlite:///{damaged}")
        assert result.exit_code == 4, result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: the study database failed: "), result.stderr
        assert "no such column: trials.datetime_start" in result.stderr and "Traceback" not in result.output
