"""The benchmarks' own logic: how a time-to-accuracy run is scored, how the suite judges its targets,
that the storage benchmark's bulk-written history is one Optuna reads back as real trials, and how the
database-ceiling benchmark audits, summarizes and extrapolates its arms (and runs one, on each backend)."""

from __future__ import annotations

import shutil
import subprocess

import optuna
import pytest

from benchmarks.common import code_version
from benchmarks.db_ceiling import audit, ceiling, extrapolate, measure_arm
from benchmarks.db_ceiling_client import STUDY as DB_CEILING_STUDY
from benchmarks.db_ceiling_client import mlp_parameters, validation_curve
from benchmarks.run_all import figures
from benchmarks.storage_scale import EPOCHS, _bookkeeping, _fill, _study
from benchmarks.time_to_accuracy import EpochLog, judge, rival_epochs, rival_params, summarize, tuner_epochs, tuner_params
from tests.helpers import SERVER_ADMIN_URLS
from tuner.records import EPOCH_LOG_ATTR, EpochRecord


def _epochs(*epochs: tuple[float, float, int]) -> list[dict]:
    return [{"time": 1000.0 + seconds, "val_accuracy": accuracy, "trial": trial} for seconds, accuracy, trial in epochs]


def test_time_to_accuracy_counts_the_first_epoch_at_the_target_and_nothing_past_the_limit():
    epochs = _epochs((10, 0.91, 0), (25, 0.975, 1), (55, 0.9801, 0), (40, 0.97, 1), (70, 0.985, 2))
    result = summarize(epochs, launched=1000.0, limit=60, target=0.98)
    assert result["seconds_to_target"] == 55.0
    assert result["best_accuracy"] == 0.9801  # the 98.5% epoch ended after the limit
    assert (result["epochs"], result["trials"]) == (4, 2)
    assert result["best_so_far"] == [[10.0, 0.91], [25.0, 0.975], [55.0, 0.9801]]
    assert result["best_trial"] == 0


def test_time_to_accuracy_reads_the_epochs_trials_trained_not_the_copy_a_queued_retry_holds(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    log = [EpochRecord(epoch=e, time=1000.0 + e, val_loss=0.1, val_accuracy=0.97 + e / 1000).to_dict() for e in (1, 2)]
    distributions: dict[str, optuna.distributions.BaseDistribution] = {"x": optuna.distributions.FloatDistribution(0, 1)}
    interrupted = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"x": 0.5}, distributions=distributions)
    interrupted.set_user_attr(EPOCH_LOG_ATTR, log)
    study.add_trial(interrupted)
    study.enqueue_trial({"x": 0.5}, user_attrs={EPOCH_LOG_ATTR: log})  # the retry, as Optuna's callback copies it
    epochs = tuner_epochs(tmp_path / "tuner.db")
    assert [(e["trial"], e["val_accuracy"]) for e in epochs] == [(0, 0.971), (0, 0.972)]


def test_time_to_accuracy_names_the_parameters_of_the_trial_that_won(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    study.enqueue_trial({"x": 0.25})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert tuner_params(tmp_path / "tuner.db", 0) == {"x": 0.25}
    assert tuner_params(tmp_path / "tuner.db", None) is None
    events = EpochLog(tmp_path / "events.jsonl")
    events.write(trial="0/a", params={"units": 64})
    events.write(trial="0/a", epoch=1, val_accuracy=0.9)
    events.write(trial="0/b", params={"units": 512})
    events.write(trial="0/b", epoch=1, val_accuracy=0.95)
    epochs = rival_epochs(tmp_path / "events.jsonl")  # the parameter lines are not epochs
    assert [e["val_accuracy"] for e in epochs] == [0.9, 0.95]
    best = summarize(epochs, launched=epochs[0]["time"] - 1, limit=60, target=0.98)["best_trial"]
    assert rival_params(tmp_path / "events.jsonl", best) == {"units": 512}


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


# --- benchmarks/db_ceiling.py ---------------------------------------------------------------------------------


def _arm(
    clients: int,
    rate: float,
    *,
    peak: int | None,
    hold: float = 30.0,
    coordination: float = 400.0,
    server_cpu: float | None = 70.0,
    ok: bool = True,
) -> dict:
    return {
        "clients": clients,
        "trials_per_second": rate,
        "audit": {"ok": ok},
        "ok": ok,
        "lock_hold_ms": {"p50": hold},
        "coordination_ms_per_trial": {"mean": coordination},
        "connections": {"server": {"peak": peak} if peak is not None else None},
        "cpu_ms_per_trial": {"database_server": server_cpu, "clients": 300.0},
    }


def test_db_ceiling_finds_where_throughput_saturates_and_what_limits_real_workers():
    arms = [_arm(1, 2.0, peak=2), _arm(4, 6.0, peak=8, hold=45), _arm(8, 6.3, peak=16), _arm(16, 9.9, peak=40, ok=False)]
    found = ceiling(arms)
    # K=16 lost trials, so it does not count; 6.0 is within 10% of the best, 6.3, so K=4 is where it saturates.
    assert found["trials_per_second"] == 6.3 and found["saturates_at_clients"] == 4
    assert found["lock_hold_ms_alone"] == 30.0 and found["lock_hold_ms_at_saturation"] == 45
    assert found["server_connections_per_client"] == 2.0  # (16 - 2) / (8 - 1)

    limited = extrapolate(found, trial_seconds=60, budget=0.05, max_connections=100, server_cores=2)
    assert limited["bounds"] == {
        "measured_ceiling_of_this_machine": 396,
        "study_lock": 2100,
        "database_server_cpu": 1800,
        "max_connections": 45,
    }
    assert (limited["workers"], limited["limited_by"]) == (45, "max_connections")
    assert limited["coordination_alone_within_budget"] is True  # 400 ms of a 60 s trial
    roomy = extrapolate(found, trial_seconds=60, budget=0.05, max_connections=10_000, server_cores=2)
    assert (roomy["workers"], roomy["limited_by"]) == (1800, "database_server_cpu")
    assert (
        extrapolate(found, trial_seconds=6, budget=0.05, max_connections=100, server_cores=2)["coordination_alone_within_budget"] is False
    )

    assert ceiling([_arm(1, 2.0, peak=2, ok=False)]) == {"trials_per_second": None}


@pytest.mark.slow
def test_db_ceiling_arm_whose_clients_cannot_start_fails_without_stopping_the_benchmark(tmp_path):
    # A heartbeat of 0 s is a configuration tuner refuses: every client stops before joining the study.
    arm = measure_arm(
        backend="sqlite", clients=2, trials=4, admin_url="unused for SQLite", epoch_seconds=0.001, heartbeat=0, folder=tmp_path
    )
    assert arm["ok"] is False and arm["trials_per_second"] is None and "heartbeat" in arm["failed_to_start"]


def test_db_ceiling_audit_counts_lost_and_unfinished_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    study = optuna.create_study(study_name=DB_CEILING_STUDY, storage=url)
    for _ in range(4):
        study.tell(study.ask(), 1.0)
    assert audit(url, 4)["ok"] and audit(url, 4)["contiguous"]
    assert not audit(url, 5)["ok"]  # one trial short
    study.ask()  # left RUNNING
    stuck = audit(url, 4)
    assert not stuck["ok"] and stuck["unfinished"] == 1 and stuck["trials"] == 5


def test_db_ceiling_trial_stand_in_describes_an_mnist_mlp():
    assert mlp_parameters({"n_layers": 0, "units": 0}) == 784 * 10 + 10
    assert mlp_parameters({"n_layers": 2, "units": 64}) == (784 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)
    curve = validation_curve(7, 12)
    assert len(curve) == 12 and curve == validation_curve(7, 12) and curve[-1] < curve[0]


@pytest.mark.slow
def test_db_ceiling_clients_finish_exactly_n_trials_on_sqlite(tmp_path):
    arm = measure_arm(
        backend="sqlite", clients=2, trials=6, admin_url="unused for SQLite", epoch_seconds=0.001, heartbeat=1, folder=tmp_path
    )
    assert arm["exit_codes"] == [0, 0], arm["errors"]
    assert arm["ok"] and arm["audit"]["finished"] == 6 and arm["audit"]["unfinished"] == 0
    assert arm["trials_per_second"] > 0 and arm["lock_hold_ms"]["p50"] > 0 and arm["tell_ms"]["p50"] > 0
    assert arm["sql_statements_per_trial"] > 10 and arm["epochs_per_trial"] >= 1 and arm["cpu_ms_per_trial"]["clients"] > 0
    assert arm["connections"]["server"] is None  # a file has no server to count connections on


@pytest.mark.slow
@pytest.mark.servers
def test_db_ceiling_clients_on_postgresql_are_counted_on_the_server(servers, tmp_path):
    servers.url("postgresql")  # skips, or fails in CI, without a server
    arm = measure_arm(
        backend="postgresql",
        clients=2,
        trials=6,
        admin_url=SERVER_ADMIN_URLS["postgresql"],
        epoch_seconds=0.001,
        heartbeat=1,
        folder=tmp_path,
    )
    assert arm["exit_codes"] == [0, 0], arm["errors"]
    assert arm["audit"]["ok"] and arm["audit"]["finished"] == 6
    assert arm["connections"]["server"]["peak"] >= 2  # at least the lock's connection of each client
    assert arm["sql_statement_ms"]["p50"] > 0 and arm["lock_wait_ms"]["max"] >= 0


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_a_result_names_the_commit_it_ran_from_and_the_files_edited_since(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    for name in ("search.py", "study.toml"):
        (tmp_path / name).write_text("x\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path) == {"commit": head, "changed_files": []}
    (tmp_path / "study.toml").write_text("kind = 'hyperband'\n")
    (tmp_path / "scratch.txt").write_text("not tracked\n")
    assert code_version(tmp_path) == {"commit": head, "changed_files": ["study.toml"]}
    subprocess.run([*git, "mv", "search.py", "a search.py"], check=True)
    assert code_version(tmp_path) == {"commit": head, "changed_files": ["a search.py", "study.toml"]}


@needs_git
def test_a_result_outside_a_checkout_says_its_commit_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # a temporary folder inside a checkout is still outside
    assert code_version(tmp_path) == {"commit": None, "changed_files": None}


KERASTUNER_WINNER = {  # as time_to_accuracy records a KerasTuner run's best trial: no epochs, its bookkeeping beside
    "n_layers": 1,
    "units": 16,
    "input_dropout": 0.0,
    "dropout": 0.1,
    "optimizer": "sgd_momentum",
    "learning_rate": 0.05,
    "weight_decay": 1e-05,
    "l2": 0.0,
    "schedule": "cosine",
    "batch_size": 64,
    "tuner/epochs": 30,
    "tuner/trial_id": "0067",
}


def test_retrain_best_fixes_a_winning_configuration_as_a_one_trial_study_of_the_default_space(tmp_path):
    import tomllib

    from benchmarks.retrain_best import study_text
    from tuner.studyfile import Fixed, default_study_file, load_study_file

    base = tomllib.loads(default_study_file().read_text())
    path = tmp_path / "study.toml"
    path.write_text(study_text(KERASTUNER_WINNER, name="retrain", base=base))
    spec = load_study_file(path=path)
    assert spec.name == "retrain" and not spec.portfolio and not spec.baselines and spec.pruner.kind == "none"
    fixed = {name: rule.value for name, rule in spec.space.items() if isinstance(rule, Fixed)}
    assert fixed.keys() == spec.space.keys()
    assert fixed == {
        **{k: v for k, v in KERASTUNER_WINNER.items() if not k.startswith("tuner/")},
        "epochs": 30,  # KerasTuner's winner names no budget: the default study's
    }
    assert spec.validation_fraction == load_study_file(path=default_study_file()).validation_fraction  # the search's split
    with pytest.raises(SystemExit, match="leaves units unfixed"):
        study_text({k: v for k, v in KERASTUNER_WINNER.items() if k != "units"}, name="retrain", base=base)


@pytest.mark.slow
def test_retrain_best_trains_each_arms_winner_again_and_scores_it_on_the_test_set(tmp_path):
    import json
    import sys

    from tests.helpers import MNIST_SMALL

    result = tmp_path / "time_to_accuracy.json"
    result.write_text(json.dumps({"arms": {"kerastuner": {"runs": [{"seed": 0, "best_accuracy": 0.9, "best_params": KERASTUNER_WINNER}]}}}))
    command = [sys.executable, "-m", "benchmarks.retrain_best", str(result), "--quick", "--seeds", "3", "--data", str(MNIST_SMALL)]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (retrained,) = json.loads(done.stdout)["arms"]["kerastuner"]
    (one,) = retrained["retrains"]
    assert one["seed"] == 3 and one["epochs_trained"] == 2 and 0 < one["test_accuracy"] <= 1 and 0 < one["best_val_accuracy"] <= 1
    assert retrained["median_test_accuracy"] == one["test_accuracy"] and "tuner/epochs" not in retrained["params"]
