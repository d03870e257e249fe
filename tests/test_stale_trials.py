"""A worker killed after creating its trial but before its first heartbeat leaves no trial RUNNING for ever.

Optuna's stale-trial sweep skips trials without a heartbeat row; tuner.storage.fail_stale_trials closes
that gap. Found by tests/test_faults.py, whose SIGKILLs sometimes land in that window.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from tests.conftest import MNIST_SMALL
from tuner.config import resolve_run_config
from tuner.runner import Tally, run_study
from tuner.storage import open_storage


def test_a_trial_orphaned_before_its_first_heartbeat_is_failed_and_retried(tiny_study_file, sqlite_url):
    config = resolve_run_config(
        study_file=tiny_study_file, storage_url=sqlite_url, data_path=str(MNIST_SMALL), n_trials=2, baselines=False,
        heartbeat_interval=1, grace_period=2, timeout=90,
    )
    storage = open_storage(sqlite_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name=config.study_name, storage=storage)
    orphan = study.ask()  # RUNNING, and no heartbeat was ever written: its worker "died" right here
    orphan.suggest_int("n_layers", 0, 2)
    time.sleep(2.5)

    started = time.monotonic()
    run_study(config)  # before the fix: waited for the orphan until the 90 s timeout, leaving it RUNNING
    trials = optuna.load_study(study_name=config.study_name, storage=sqlite_url).get_trials(deepcopy=False)
    assert trials[orphan.number].state == TrialState.FAIL
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t.number for t in trials] == list(range(len(trials)))
    tally = Tally.of(trials)
    assert orphan.number in tally.retried and tally.finished == 2  # retried, so it does not count towards the 2
    assert time.monotonic() - started < 60
