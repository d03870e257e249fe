"""How many workers ``tuner run`` starts when not told: one single-threaded worker per CPU, as memory allows."""

from __future__ import annotations

import re

import pytest

from tests.helpers import MNIST_SMALL, invoke
from tuner import config
from tuner.config import DEFAULT_TRIALS, MAX_DEFAULT_WORKERS, WORKER_MEMORY_BYTES, default_workers, resolve_run_config
from tuner.workers import _worker_environment

GIB = 1 << 30


@pytest.mark.parametrize(
    ("cpus", "memory", "threads", "expected"),
    [
        (2, 24 * GIB, None, 2),  # this project's CI machine: two one-thread workers
        (1, 24 * GIB, None, 1),
        (16, 7 * GIB, None, 7 * GIB // WORKER_MEMORY_BYTES),  # memory-bound
        (64, 512 * GIB, None, MAX_DEFAULT_WORKERS),  # capped
        (8, 24 * GIB, 1, 1),  # --threads 1 means one CPU's worth of work
        (4, GIB // 2, None, 1),  # never zero
    ],
)
def test_default_workers(cpus, memory, threads, expected):
    assert default_workers(cpus=cpus, memory_bytes=memory, threads=threads) == expected


def test_an_unset_worker_count_is_the_machine_default_and_a_given_one_wins(monkeypatch):
    monkeypatch.setattr(config, "usable_cpus", lambda: 3)
    monkeypatch.setattr(config, "_available_memory", lambda: 64 * GIB)
    assert resolve_run_config(workers=None).workers == 3
    assert resolve_run_config(workers=1).workers == 1


@pytest.mark.slow
def test_tuner_run_starts_the_default_workers_with_one_thread_each(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_WORKERS")  # the test suite's in-process default (conftest)
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "fast.toml"
    study_file.write_text('[study]\nname = "auto"\n[space]\nn_layers = 0\nepochs = 1\n')
    result = invoke(cli, "run", "--trials", 3, "--study-file", study_file, "--data", MNIST_SMALL)
    assert result.exit_code == 0, result.output
    workers = default_workers()
    if workers > 1:
        assert f"{workers} worker processes, {max(1, config.usable_cpus() // workers)} TensorFlow threads each" in result.stderr
    assert "3/3 finished" in result.stdout


def test_a_timeout_without_a_trial_count_sets_no_count_as_optunas_optimize_does():
    assert resolve_run_config().n_trials == DEFAULT_TRIALS
    assert resolve_run_config(timeout=60).n_trials is None
    assert resolve_run_config(timeout=60, n_trials=5).n_trials == 5


def test_workers_of_a_run_without_a_count_get_none_and_the_timeout(monkeypatch):
    monkeypatch.setenv("TUNER_TRIALS", "7")  # the parent's own environment must not leak a count into its workers
    env = _worker_environment(resolve_run_config(timeout=60), threads=1)
    assert "TUNER_TRIALS" not in env and env["TUNER_TIMEOUT"] == "60"
    assert _worker_environment(resolve_run_config(n_trials=9), threads=1)["TUNER_TRIALS"] == "9"


@pytest.mark.slow
def test_tuner_run_with_only_a_timeout_runs_trials_until_the_timeout(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "fast.toml"
    study_file.write_text('[study]\nname = "timed"\nportfolio = false\nbaselines = false\n[space]\nn_layers = 0\nepochs = 1\n')
    result = invoke(cli, "run", "--timeout", 4, "--study-file", study_file, "--data", MNIST_SMALL)
    assert result.exit_code == 0, result.output
    assert re.search(r"study timed: [1-9]\d*/\? finished", result.stdout), result.stdout
