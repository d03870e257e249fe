"""Settings from ./.env: below flags and the real environment, above the study file; only TUNER_* names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import optuna
import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_ENV_FILE", raising=False)  # conftest turns .env off for every other test
    return tmp_path


def _error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_dotenv_storage_with_interpolation_is_used(cli, workdir):
    optuna.create_study(study_name="from-dotenv", storage=f"sqlite:///{workdir / 'dotenv.db'}")
    (workdir / ".env").write_text(
        f"# the stack's settings, reused\nDB_FILE={workdir / 'dotenv.db'}\nTUNER_STORAGE=sqlite:///${{DB_FILE}}\n"
    )
    result = invoke(cli, "studies")
    assert result.exit_code == 0, result.output
    assert "from-dotenv" in result.stdout and str(workdir / "dotenv.db") in result.stdout


def test_precedence_flag_then_environment_then_dotenv_then_study_file(cli, workdir, tiny_study_file):
    """Each layer shows through the value that --trials and --study validation report back."""
    (workdir / ".env").write_text("TUNER_TRIALS=0\nTUNER_STUDY=" + "n" * 201 + "\n")
    args = ["run", "--study-file", tiny_study_file, "--data", workdir / "absent"]
    assert "got 0" in _error(invoke(cli, *args))  # .env over the default
    assert "got -3" in _error(invoke(cli, *args, env={"TUNER_TRIALS": "-3"}))  # environment over .env
    assert "got -5" in _error(invoke(cli, *args, "--trials", "-5", env={"TUNER_TRIALS": "-3"}))  # flag over both
    # With valid trials, the .env's 201-character study name beats the study file's name "tiny".
    assert "--study must be 1 to 200 printable characters" in _error(invoke(cli, *args, "--trials", "1"))
    (workdir / ".env").write_text("TUNER_TRIALS=1\n")
    assert "data path not found" in _error(invoke(cli, *args))  # and without it, the study file's name is fine


def test_only_tuner_names_are_read_and_nothing_enters_the_process_environment(cli, workdir):
    (workdir / ".env").write_text("PATH=/nowhere\nLD_PRELOAD=/tmp/evil.so\nPYTHONPATH=/tmp/evil\nTUNER_STORAGE=sqlite:///dotenv-only.db\n")
    before = dict(os.environ)
    result = invoke(cli, "studies")
    assert os.environ == before
    assert "dotenv-only.db" in _error(result)  # the TUNER_ value was used ...
    assert not (workdir / "dotenv-only.db").exists()  # ... to read, not to create


@pytest.mark.slow
def test_the_compose_example_works_as_a_dotenv_file(cli, workdir):
    """.env.example leaves TUNER_THREADS, TUNER_DATA and TUNER_STUDY_FILE empty: empty means unset, as in the environment."""
    shutil.copy(ROOT / ".env.example", workdir / ".env")
    result = invoke(cli, "run", "--data", workdir / "absent", "--storage", f"sqlite:///{workdir / 'x.db'}")
    assert result.exit_code == 3 and "data path not found" in _error(result)


def test_secret_from_dotenv_is_never_printed(cli, workdir):
    pytest.importorskip("psycopg2")
    (workdir / ".env").write_text(
        "POSTGRES_PASSWORD=dotenv-s3cret\nTUNER_STORAGE=postgresql+psycopg2://tuner:${POSTGRES_PASSWORD}@127.0.0.1:9/tuner\n"
    )
    result = invoke(cli, "studies")
    assert result.exit_code == 4 and "cannot open storage postgresql database 'tuner' on 127.0.0.1:9" in _error(result)
    assert "dotenv-s3cret" not in result.output


@pytest.mark.parametrize("content", [None, b"TUNER_STORAGE=\xff\xfe\n"])
def test_unreadable_dotenv_is_one_config_error(cli, workdir, content):
    if content is None:
        (workdir / ".env").mkdir()
    else:
        (workdir / ".env").write_bytes(content)
    result = invoke(cli, "studies")
    assert result.exit_code == 2 and ".env" in _error(result)


def test_tuner_env_file_names_another_file_or_turns_it_off(cli, workdir, monkeypatch):
    (workdir / ".env").write_text("TUNER_TRIALS=0\n")
    (workdir / "secrets.env").write_text("TUNER_TRIALS=-7\n")
    args = ["run", "--data", workdir / "absent"]
    monkeypatch.setenv("TUNER_ENV_FILE", str(workdir / "secrets.env"))
    assert "got -7" in _error(invoke(cli, *args))
    monkeypatch.setenv("TUNER_ENV_FILE", "")
    assert "data path not found" in _error(invoke(cli, *args))  # neither file: the default of 100 trials is valid
    monkeypatch.setenv("TUNER_ENV_FILE", str(workdir / "missing.env"))
    result = invoke(cli, *args)
    assert result.exit_code == 2 and "TUNER_ENV_FILE names" in _error(result) and "missing.env" in _error(result)


def test_no_dotenv_changes_nothing(cli, workdir):
    result = invoke(cli, "studies")
    assert result.exit_code == 4 and "no study database" in _error(result)
