"""docker-compose.yml without Docker: validated against the compose-spec schema, its topology checked, its
service commands checked against the real CLI, then its worker and dashboard services started as plain
processes, with the compose file's own commands and environment, against this machine's PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import resources

import click
import jsonschema
import optuna
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import COMPOSE_FILE, ENV_EXAMPLE, MNIST_SMALL, REPO_ROOT, compose, free_port, poll_json, read_env_file, study_exists
from tuner.cli import main
from tuner.results import Tally


def test_compose_file_matches_the_compose_spec():
    document = compose(read_env_file(ENV_EXAMPLE))
    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]
    assert not errors
    broken = dict(document, services={**document["services"], "worker": {**document["services"]["worker"], "restart": 3}})
    assert list(validator.iter_errors(broken))  # the schema really is applied


@pytest.mark.slow
@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0 if shutil.which("docker") else True,
    reason="no docker compose plugin",
)
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_topology():
    document = compose(read_env_file(ENV_EXAMPLE))
    services, volumes = document["services"], document["volumes"]
    assert set(services) == {"db", "worker", "dashboard", "export"}

    db = services["db"]
    assert "ports" not in db  # reachable from the stack's network only
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert db["volumes"][0].split(":")[0] in volumes  # a named volume, not a bind mount

    worker = services["worker"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert worker["restart"] == "on-failure"
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N needs neither
    assert make_url(worker["environment"]["TUNER_STORAGE"]).host == "db"

    dashboard = services["dashboard"]
    assert dashboard["ports"] and all(str(port).startswith("127.0.0.1:") for port in dashboard["ports"])
    assert dashboard["environment"]["TUNER_DASHBOARD_PORT"] == str(dashboard["ports"][0]).rsplit(":", 1)[1]

    export = services["export"]
    assert export["profiles"] == ["export"] and export["restart"] == "no"
    assert any(volume.split(":")[0] in volumes and volume.endswith(":/work/artifacts") for volume in export["volumes"])
    assert all("profiles" not in services[name] for name in ("db", "worker", "dashboard"))


@pytest.mark.parametrize("service", ["worker", "dashboard", "export"])
def test_service_command_is_a_tuner_command_and_its_settings_are_read(service):
    spec = compose(read_env_file(ENV_EXAMPLE))["services"][service]
    program, name, *args = spec["command"]
    assert program == "tuner" and name in main.commands, spec["command"]
    command = main.commands[name]
    command.make_context(name, list(args))  # raises on an unknown option or a bad value
    envvars = {param.envvar for param in command.params if isinstance(param, click.Option) and param.envvar}
    settings = {key for key in spec["environment"] if key.startswith("TUNER_")}
    assert settings <= envvars, f"{service}: {settings - envvars} are read by no option of 'tuner {name}'"


@pytest.mark.slow
def test_env_example_provides_every_required_variable_and_env_is_ignored():
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{(\w+):?\?", text))
    example = read_env_file(ENV_EXAMPLE)
    assert required <= set(example)
    assert set(re.findall(r"\$\{(\w+)", text)) <= set(example) | {"POSTGRES_USER", "POSTGRES_DB"}
    assert example["POSTGRES_PASSWORD"] == "change-me"
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT).returncode == 0
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        compose({})  # without .env, compose refuses to start


def _start(spec: dict, extra_env: dict[str, str]) -> subprocess.Popen:
    program, *args = spec["command"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **spec["environment"], **extra_env}
    return subprocess.Popen([sys.executable, "-m", "tuner", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.servers
def test_stack_services_run_as_processes(servers, fast_study_file, unique_name):
    server = make_url(servers.url("postgresql"))
    # What differs from `docker compose up`: the database host and account, the data and a tiny study.
    variables = {
        **read_env_file(ENV_EXAMPLE),
        "POSTGRES_HOST": server.host,
        "POSTGRES_PORT": str(server.port or 5432),
        "POSTGRES_USER": server.username,
        "POSTGRES_DB": server.database,
        "TUNER_STUDY": unique_name,
        "TUNER_STUDY_FILE": str(fast_study_file),
        "TUNER_DATA": str(MNIST_SMALL),
        "TUNER_TRIALS": "4",
        "TUNER_THREADS": "1",
    }
    services = compose(variables)["services"]
    storage = services["worker"]["environment"]["TUNER_STORAGE"]
    port = free_port()
    workers = [_start(services["worker"], {}) for _ in range(2)]  # docker compose up --scale worker=2
    dashboard = None
    try:
        deadline = time.time() + 120
        while not study_exists(storage, unique_name):
            assert time.time() < deadline and all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            time.sleep(0.5)
        # Loopback instead of 0.0.0.0, and a free port: the test's only changes to the dashboard's environment.
        dashboard = _start(services["dashboard"], {"TUNER_DASHBOARD_HOST": "127.0.0.1", "TUNER_DASHBOARD_PORT": str(port)})
        studies = poll_json(f"http://127.0.0.1:{port}/api/studies", dashboard)
        assert unique_name in [study["study_name"] for study in studies["study_summaries"]]
        outputs = [w.communicate(timeout=180) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        assert all("password" not in out + err and "change-me" not in out + err for out, err in outputs)
        trials = optuna.load_study(study_name=unique_name, storage=storage).get_trials(deepcopy=False)
        assert [t.number for t in trials] == [0, 1, 2, 3] and Tally.of(trials).finished == 4
        summary = poll_json(f"http://127.0.0.1:{port}/api/studies", dashboard)
        (listed,) = [s for s in summary["study_summaries"] if s["study_name"] == unique_name]
        assert listed["study_id"] >= 0
    finally:
        for process in [*workers, dashboard]:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
