"""Many workers, one study: real worker processes on each backend, a worker killed mid-trial, and SIGTERM
to ``tuner run --workers``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.helpers import FAST_STUDY, MNIST_SMALL, invoke, spawn_worker, wait_for
from tuner.config import usable_cpus
from tuner.records import FAIL_REASON_ATTR, PORTFOLIO_ATTR
from tuner.results import Tally
from tuner.workers import has_lead_trial, lead_threads, threads_per_worker

# Several seconds a trial: long enough to catch two workers training at once.
SLOW_STUDY = FAST_STUDY.replace('name = "fast"', 'name = "slow"').replace("epochs = 1", "epochs = 15")


def _trials(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_threads_are_split_between_workers():
    assert threads_per_worker(workers=2, threads=8) == 4
    assert threads_per_worker(workers=3, threads=2) == 1
    assert threads_per_worker(workers=2, threads=None) == max(1, usable_cpus() // 2)


@pytest.mark.slow
def test_workers_share_one_study_and_stop_at_exactly_n(cli, storage_url, fast_study_file, unique_name):
    result = invoke(
        cli,
        "run",
        "--workers",
        2,
        "--trials",
        6,
        "--threads",
        2,
        "--study",
        unique_name,
        "--study-file",
        fast_study_file,
        "--data",
        MNIST_SMALL,
        env={"TUNER_STORAGE": storage_url},
    )
    assert result.exit_code == 0, result.output
    assert "2 worker processes, 1 TensorFlow threads each" in result.stderr
    assert "6/6 finished" in result.stdout and "│            6 │" in result.stdout  # new this run
    assert "locked" not in result.output and "Traceback" not in result.output
    trials = _trials(storage_url, unique_name)
    assert [t.number for t in trials] == list(range(6))  # no gap, no duplicate, no seventh trial
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    # Each trial draws its parameters with its own seed: workers never repeat each other's configuration.
    assert len({t.params["learning_rate"] for t in trials}) == 6
    assert optuna.load_study(study_name=unique_name, storage=storage_url).user_attrs["tuner"]["seed"] == 3


@pytest.mark.slow
def test_a_new_studys_first_portfolio_trial_trains_alone_then_the_workers_share_the_rest(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_file = tmp_path / "lead.toml"
    study_file.write_text(SLOW_STUDY.replace("portfolio = false", "portfolio = true").replace("epochs = 15", "epochs = 3"))
    arguments = ["--workers", 2, "--trials", 5, "--threads", 2, "--study-file", study_file, "--data", MNIST_SMALL, "--storage", url]
    result = invoke(cli, "run", *arguments)
    assert result.exit_code == 0, result.output
    assert "the first trial trains alone with 2 TensorFlow threads, then:" in result.stderr
    assert "2 worker processes, 1 TensorFlow threads each" in result.stderr
    trials = sorted(_trials(url, "slow"), key=lambda t: t.number)
    assert [t.number for t in trials] == list(range(5)) and {t.state for t in trials} == {TrialState.COMPLETE}
    lead, rest = trials[0], trials[1:]
    assert PORTFOLIO_ATTR in lead.user_attrs
    assert all(t.datetime_start >= lead.datetime_complete for t in rest)  # nothing trained beside the lead
    # Then both workers trained at once: some two of the other trials overlap in time.
    assert any(a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete for a in rest for b in rest if a is not b)


def test_only_a_new_study_with_a_strong_first_trial_and_several_workers_has_a_lead_trial():
    from tuner.results import RunStart

    def start(*, portfolio: int = 0, warm: int = 0, baselines: int = 0, finished: int = 0) -> RunStart:
        return RunStart(
            study_name="s",
            storage="sqlite",
            data_source="d",
            n_target=10,
            n_finished_before=finished,
            n_portfolio_enqueued=portfolio,
            n_baselines_enqueued=baselines,
            n_train=1,
            n_val=1,
            n_warm_started=warm,
        )

    assert has_lead_trial(start(portfolio=2), workers=2)
    assert has_lead_trial(start(warm=3), workers=4)
    assert not has_lead_trial(start(portfolio=2), workers=1)  # one worker trains it alone anyway
    assert not has_lead_trial(start(baselines=3), workers=2)  # softmax regression is no lead
    assert not has_lead_trial(start(portfolio=2, finished=4), workers=2)  # a resume
    assert lead_threads(None) == usable_cpus() and lead_threads(3) == 3


@pytest.mark.slow
@pytest.mark.servers
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_killed_worker_trial_is_failed_and_retried(servers, tmp_path, unique_name):
    url = servers.url("postgresql")
    study_file = tmp_path / "slow.toml"
    study_file.write_text(SLOW_STUDY)
    common = ("--threads", "1", "--heartbeat", "1", "--grace-period", "5")
    victim = spawn_worker(url, study_file, unique_name, 4, *common)
    survivor = spawn_worker(url, study_file, unique_name, 4, *common)
    try:
        wait_for(
            lambda: len([t for t in _trials(url, unique_name) if t.state == TrialState.RUNNING and t.intermediate_values]) == 2,
            victim,
            "both workers to train",
            limit=150,
        )
        victim.send_signal(signal.SIGKILL)  # in the middle of its trial, as a power cut would
        victim.wait()
        stdout, stderr = survivor.communicate(timeout=240)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert survivor.returncode == 0, stderr
    assert "4/4 finished" in stdout and "1 trial(s) of dead workers or interrupted runs failed and were retried" in stdout

    trials = _trials(url, unique_name)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert Tally.of(trials).finished == 4 and len(trials) == 5  # four finished trials plus the one that died
    (killed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert killed.intermediate_values and FAIL_REASON_ATTR not in killed.user_attrs  # died training, failed by the survivor
    (retry,) = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == killed.number and retry.number > killed.number
    assert retry.system_attrs["retry_history"] == [killed.number] and retry.params == killed.params
    assert retry.state == TrialState.COMPLETE and retry.user_attrs.get(FAIL_REASON_ATTR) is None


@pytest.mark.slow
def test_sigterm_to_workers_parent_stops_and_reaps_every_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study_file = tmp_path / "slow.toml"
    study_file.write_text(SLOW_STUDY.replace("epochs = 15", "epochs = 1000"))
    parent = spawn_worker(url, study_file, "slow", 10, "--workers", "2", "--threads", "2")
    try:
        wait_for(
            lambda: len([t for t in _trials(url, "slow") if t.state == TrialState.RUNNING and t.intermediate_values]) == 2,
            parent,
            "both workers to train",
            limit=180,
        )
        children = _children(parent.pid)
        assert len(children) == 2
        parent.send_signal(signal.SIGTERM)
        _, stderr = parent.communicate(timeout=90)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert parent.returncode == 130, stderr
    assert "Interrupted: every worker stopped" in stderr and "Resume with: tuner run --trials 10 --study 'slow'" in stderr
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not orphaned
    trials = _trials(url, "slow")
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2, (states, stderr)
    # Each interrupted trial is queued again and no longer counts towards --trials.
    assert states.count(TrialState.WAITING) == 2 and Tally.of(trials).finished == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
