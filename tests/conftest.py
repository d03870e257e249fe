"""Fixtures and hooks only: the committed MNIST cut, tiny study files, an in-process CLI runner, a trained study,
databases on the servers, and the Hypothesis profiles. What tests import lives in tests/helpers.py."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url

from tests.helpers import FAST_STUDY, MNIST_SMALL, SERVER_ADMIN_URLS, TINY_STUDY, sqlite_file

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A developer's ./.env (the compose stack's, say) must not change what the tests run; tests/test_envfile.py turns it back on.
os.environ.setdefault("TUNER_ENV_FILE", "")
# `tuner run` starts one worker per core by default; tests run in-process unless they ask for workers
# (tests/test_workers.py, and the default's own test in tests/test_cli_run.py).
os.environ.setdefault("TUNER_WORKERS", "1")
# Tests stop `tuner` processes with SIGINT, as Ctrl-C would. A shell starts a background job (`bash .ci/run &`)
# with SIGINT ignored, and the processes it starts inherit that, Python included: take it back for them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Hypothesis: "ci" runs the full example counts, "dev" (the default) a tenth of them for the everyday loop.
# HYPOTHESIS_PROFILE names one outright; otherwise a true CI variable picks "ci". Properties that cost more per
# example take a share of the count (tests.helpers.examples). No deadline: one example may call TensorFlow or
# start the CLI, whose first call takes seconds. The function-scoped-fixture check stays off as the fuzz tests had it.
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=_SUPPRESSED)
settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=_SUPPRESSED)
_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _CI else "dev"))


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
    run_study(config=config)
    return url, config.study_name


@pytest.fixture
def study_copy(trained_study, tmp_path) -> tuple[str, str]:
    """A private copy of the shared trained study: exporting writes a study attribute."""
    url, name = trained_study
    copy = tmp_path / "copy.db"
    with sqlite3.connect(sqlite_file(url)) as source, sqlite3.connect(copy) as target:
        source.backup(target)  # consistent even with the WAL the storage uses
    return f"sqlite:///{copy}", name


# --- Database servers (PostgreSQL, MariaDB/MySQL) -------------------------------------------------------------
# Each test session gets fresh databases tuner_test_<random> on the servers and drops them at the end. A
# server that does not answer skips its tests, unless TUNER_REQUIRE_SERVERS=1 (CI), where they fail.
# tests.helpers.SERVER_ADMIN_URLS says which servers.


class _Servers:
    def __init__(self) -> None:
        import secrets

        self.database = f"tuner_test_{secrets.token_hex(4)}"
        self.urls: dict[str, str] = {}
        self.problems: dict[str, str] = {}

    def create(self) -> None:
        import sqlalchemy

        for backend, admin_url in SERVER_ADMIN_URLS.items():
            try:
                engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
                with engine.connect() as connection:
                    connection.exec_driver_sql(f"CREATE DATABASE {self.database}")
                engine.dispose()
            except Exception as exc:  # the reason is reported by the skip or failure of every test that needs it
                where = make_url(admin_url).render_as_string(hide_password=True)
                self.problems[backend] = f"{backend} server at {where} unavailable: {str(exc).splitlines()[0]}"
                continue
            self.urls[backend] = make_url(admin_url).set(database=self.database).render_as_string(hide_password=False)

    def drop(self) -> None:
        import sqlalchemy

        for backend in self.urls:
            engine = sqlalchemy.create_engine(SERVER_ADMIN_URLS[backend], isolation_level="AUTOCOMMIT")
            force = " WITH (FORCE)" if backend == "postgresql" else ""  # workers' connections may linger for a moment
            with engine.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {self.database}{force}")
            engine.dispose()

    def url(self, backend: str) -> str:
        if backend not in self.urls:
            message = self.problems.get(backend, f"no {backend} server configured")
            if os.environ.get("TUNER_REQUIRE_SERVERS") == "1":
                pytest.fail(f"{message} (TUNER_REQUIRE_SERVERS=1)")
            pytest.skip(message)
        return self.urls[backend]


@pytest.fixture(scope="session")
def servers():
    """The session's databases on the PostgreSQL and MySQL servers; ``servers.url(backend)`` skips or fails when one is missing."""
    found = _Servers()
    found.create()
    yield found
    found.drop()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request, servers, tmp_path) -> str:
    """A storage URL on each backend in turn; tests keep apart on a server through unique study names."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return servers.url(request.param)


@pytest.fixture
def unique_name(request) -> str:
    import secrets

    return f"{request.node.name[:40]}-{secrets.token_hex(3)}"


@pytest.fixture
def fast_study_file(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST_STUDY)
    return path
