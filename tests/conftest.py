"""Shared fixtures: the committed MNIST cut, tiny study files, an in-process CLI runner, a trained study."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = Path(__file__).parent / "fixtures"
MNIST_SMALL = FIXTURES / "mnist-small"

# Small enough that a trial takes about a second on the fixture, varied enough that the median pruner prunes.
TINY_STUDY = """
[study]
name = "tiny"

[pruner]
kind = "median"
n_startup_trials = 2
n_warmup_steps = 0

[sampler]
seed = 1
n_startup_trials = 4

[training]
patience = 2

[space]
n_layers = { low = 0, high = 2 }
units = { low = 16, high = 64, log = true }
dropout = { low = 0.0, high = 0.4 }
batch_size = { choices = [64, 128] }
epochs = { low = 2, high = 3 }
learning_rate = { low = 1e-4, high = 0.3, log = true }
optimizer = { choices = ["sgd", "sgd_momentum", "rmsprop", "adam"] }
l2 = { low = 1e-8, high = 1e-3, log = true }
"""


@pytest.fixture
def mnist_small() -> Path:
    return MNIST_SMALL


@pytest.fixture
def tiny_study_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_STUDY)
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str, env: dict[str, str] | None = None):
    """Run the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from tuner.cli import main

    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="session")
def trained_study(tmp_path_factory) -> tuple[str, str]:
    """A finished 6-trial study on the fixture, shared read-only by tests: (storage URL, study name)."""
    from tuner.config import resolve_run_config
    from tuner.runner import run_study

    directory = tmp_path_factory.mktemp("trained")
    study_file = directory / "tiny.toml"
    study_file.write_text(TINY_STUDY)
    url = f"sqlite:///{directory / 'study.db'}"
    config = resolve_run_config(study_file=study_file, storage_url=url, data_path=str(MNIST_SMALL), n_trials=6)
    run_study(config)
    return url, config.study_name
