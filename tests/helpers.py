"""What tests share besides fixtures: the fixture data's paths, tiny study files, the in-process CLI,
the one-error-line check, a worker process and waiting on one. Imported by tests; conftest.py keeps
only fixtures and hooks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from click.testing import CliRunner, Result
from hypothesis import settings
from optuna.trial import FrozenTrial
from sqlalchemy.engine import make_url

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

# Fast enough that several workers finish a study in seconds: softmax regression, one epoch, no pruning.
FAST_STUDY = """
[study]
name = "fast"
baselines = false
portfolio = false

[pruner]
kind = "none"

[sampler]
kind = "random"
seed = 3

[training]
patience = 0

[space]
n_layers = 0
epochs = 1
batch_size = 128
learning_rate = { low = 1e-3, high = 0.3, log = true }
optimizer = { choices = ["sgd", "adam"] }
l2 = { low = 1e-8, high = 1e-3, log = true }
"""

# TUNER_TEST_POSTGRES / TUNER_TEST_MYSQL point the tests at other servers (an admin URL with any existing database).
SERVER_ADMIN_URLS = {
    "postgresql": os.environ.get("TUNER_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    "mysql": os.environ.get("TUNER_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def invoke(runner: CliRunner, *args: object, env: dict[str, str] | None = None) -> Result:
    """Run the real CLI in-process; arguments may be paths or numbers. Returns click's Result (exit_code, stdout, stderr)."""
    from tuner.cli import main

    return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def one_error_line(result: Result, code: int, *fragments: str) -> str:
    """Assert a CLI result failed with ``code`` and exactly one 'Error: ' line on stderr holding every fragment."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def sqlite_file(url: str) -> str:
    """The file behind a sqlite:/// URL."""
    database = make_url(url).database
    assert database, f"no database file in {url}"
    return database


def examples(share: float) -> settings:
    """Hypothesis settings with ``share`` of the loaded profile's example count (conftest.py registers the
    profiles): a property whose examples cost more (a CLI call, a training step) runs fewer than the cheap ones."""
    return settings(max_examples=max(1, round(settings().max_examples * share)))


def piped(stream: IO[str] | None) -> IO[str]:
    """A process's stdin, stdout or stderr that was opened with subprocess.PIPE (so never None)."""
    assert stream is not None, "the stream was not piped"
    return stream


def objective_value(trial: FrozenTrial) -> float:
    """A finished trial's objective value, for sorting trials by it."""
    assert trial.value is not None, f"trial {trial.number} has no value"
    return trial.value


def spawn_worker(url: str, study_file: Path, name: str, n_trials: int, *extra: str) -> subprocess.Popen[str]:
    """`tuner run -q` on the MNIST fixture as a separate process, its output piped; ``extra`` adds options."""
    env = {**os.environ, "TUNER_STORAGE": url, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "tuner", "run", "-q", "--trials", str(n_trials), "--study", name, "--study-file", str(study_file)]
    command += ["--data", str(MNIST_SMALL), *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(
    condition: Callable[[], Any], process: subprocess.Popen[str], what: str, *, limit: float = 180.0, interval: float = 0.2
) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail with the process's output when
    the process exits first or ``limit`` seconds pass. A KeyError counts as not yet: the study may not exist yet."""
    deadline = time.monotonic() + limit
    while True:
        try:
            value = condition()
        except KeyError:
            value = None
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode} first: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{what}: not within {limit:g} s: {process.communicate()}")
        time.sleep(interval)
