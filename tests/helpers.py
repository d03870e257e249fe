"""What tests share besides fixtures: the fixture data's paths, tiny study files, the in-process CLI,
the one-error-line check, a worker process and waiting on one, synthetic studies, and docker-compose.yml
as compose reads it. Imported by tests; conftest.py keeps only fixtures and hooks."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import optuna
import sqlalchemy
from click.testing import CliRunner, Result
from hypothesis import settings
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from tuner.exportmeta import EXPORT_ATTR, METADATA_FILE

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


# --- Synthetic studies for the report, dashboard and browser tests (written through Optuna, no training) ----

# The parts of tuner's search space the report cares about; units only exists with hidden layers.
_SYNTHETIC_DISTRIBUTIONS = {
    "n_layers": IntDistribution(0, 2),
    "units": IntDistribution(16, 64, log=True),
    "dropout": FloatDistribution(0.0, 0.4),
    "learning_rate": FloatDistribution(1e-4, 0.3, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
}


def make_study(
    url: str, *, complete: int = 0, pruned: int = 0, failed: int = 0, running: int = 0, name: str = "synthetic", seed: int = 0
) -> optuna.Study:
    """A study as ``tuner run`` leaves it, written straight through Optuna (no training needed)."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name=name, storage=url, direction="minimize")
    states = [TrialState.COMPLETE] * complete + [TrialState.PRUNED] * pruned + [TrialState.FAIL] * failed + [TrialState.RUNNING] * running
    for state in states:
        params = {"n_layers": rng.randint(0, 2), "learning_rate": 10 ** rng.uniform(-4, -0.6), "optimizer": rng.choice(["sgd", "adam"])}
        if params["n_layers"]:
            params.update(units=rng.randint(16, 64), dropout=rng.uniform(0, 0.4))
        epochs = {TrialState.COMPLETE: 3, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 1}[state]
        curve = {step: rng.uniform(0.3, 2.5) / step for step in range(1, epochs + 1)}
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                params=params,
                distributions={name: _SYNTHETIC_DISTRIBUTIONS[name] for name in params},
                value=min(curve.values()) if state == TrialState.COMPLETE else None,
                intermediate_values=curve,
                user_attrs={"val_accuracy": rng.uniform(0.5, 0.95)} if state == TrialState.COMPLETE else {},
            )
        )
    return study


def write_export(study: optuna.Study, directory: Path, model_json: object | None, record: object = "default") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if model_json is not None:
        (directory / METADATA_FILE).write_text(model_json if isinstance(model_json, str) else json.dumps(model_json))
    if record == "default":
        record = {"path": str(directory), "trial": study.best_trial.number, "test_accuracy": 0.9123}
    study.set_user_attr(EXPORT_ATTR, record)  # raw: the tests also store records ExportRecord would never write


def confusion(n: int = 10) -> list[list[int]]:
    return [[50 if i == j else (i + j) % 3 for j in range(n)] for i in range(n)]


# An export's training history, as model.json records it.
TRAINING_HISTORY = [
    {"epoch": 1, "loss": 0.9, "accuracy": 0.71},
    {"epoch": 2, "loss": 0.5, "accuracy": 0.85},
    {"epoch": 3, "loss": 0.4, "accuracy": 0.88},
]

# The figures a report shows of a model.json, in the layout export-best writes (tuner.exportmeta).
EXPORTED_FIGURES = {"test": {"accuracy": 0.9801, "loss": 0.07, "confusion_matrix": confusion()}, "training": {"history": TRAINING_HISTORY}}


# --- docker-compose.yml as compose reads it, and the services it starts (tests/test_compose.py, test_kubernetes.py) ---

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))")


def read_env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(node, variables: dict[str, str]):
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}."""
    if isinstance(node, dict):
        return {key: interpolate(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, variables) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name, op = match["name"] or match["bare"], match["op"]
        value = variables.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and missing:
            return match["arg"]
        if op in (":?", "?") and missing:
            raise ValueError(f"{name}: {match['arg']}")
        return value or ""

    return _VARIABLE.sub(substitute, node)


def compose(variables: dict[str, str]) -> dict:
    import yaml

    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), variables)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def study_exists(storage: str, name: str) -> bool:
    try:
        return name in [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except sqlalchemy.exc.SQLAlchemyError:  # the workers may be creating Optuna's tables right now
        return False


def poll_json(url: str, process: subprocess.Popen, limit: float = 60.0):
    deadline = time.time() + limit
    while True:
        assert process.poll() is None, process.communicate()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return json.loads(response.read())
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
