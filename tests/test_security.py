"""The security pass: nothing user-given reaches a shell or SQL text, credentials never show, code never loads.

A PostgreSQL role with a password is created for this module (trust authentication on the test
server ignores the password, which is the point: it travels in the storage URL of every command).
Each command's output, files and database records are then searched for it. The compose file's
publishing rules are checked in tests/test_compose.py, Keras' safe-mode error message in
tests/test_predict.py; here a refused model and data file must also run none of their code.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from tests.helpers import FAST_STUDY, MNIST_SMALL, invoke, piped, wait_for
from tuner.errors import ConfigError, DataError, InputImageError, ModelError
from tuner.results import Tally

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "tuner").rglob("*.py"))
# A study name full of shell syntax: if any of it ran, one of these files would appear.
SHELL_NAME = "sec $(touch pwned1) `touch pwned2`; touch pwned3 | touch pwned4 & 'q\" > pwned5"
SQL_CALLS = {"execute", "exec_driver_sql", "text", "executescript"}


# --- Source audit ---------------------------------------------------------------------------------------------


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return f"{_name_of(func.value)}.{func.attr}"
    return getattr(func, "id", "")


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_name_of(node.value)}.{node.attr}"
    return getattr(node, "id", "?")


def test_sources_start_processes_only_with_argument_lists_and_never_a_shell():
    problems = []
    for path in SOURCES:
        for call in _calls(path):
            name = _name(call)
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in (
                "os.system",
                "os.popen",
                "os.execl",
                "os.execlp",
                "os.spawnl",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            ):
                problems.append(f"{where}: {name}")
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in call.keywords):
                problems.append(f"{where}: shell=")
            if name.startswith("subprocess.") and call.args and not isinstance(call.args[0], (ast.List, ast.Tuple)):
                problems.append(f"{where}: {name} with a command that is not an argument list")
            if name in ("eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load"):
                problems.append(f"{where}: {name}")
            unsafe = {"allow_pickle": True, "safe_mode": False}  # numpy unpickles, Keras deserializes Lambda code
            if any(
                k.arg in unsafe and not (isinstance(k.value, ast.Constant) and k.value.value is not unsafe[k.arg]) for k in call.keywords
            ):
                problems.append(f"{where}: {name} may load code")
    assert problems == []


def test_sources_never_build_sql_text_by_formatting():
    """SQL goes to the driver as a constant string with bound parameters; values never become SQL text."""
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        constants = {  # names assigned only string literals, such as the lock's statement chosen per backend
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _only_literals(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for call in _calls(path):
            if _name(call).rsplit(".", 1)[-1] in SQL_CALLS and call.args:
                statement = call.args[0]
                literal = _only_literals(statement) or (isinstance(statement, ast.Name) and statement.id in constants)
                if not literal and not _is_sqlalchemy_construct(statement):
                    problems.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(statement)[:80]}")
    assert problems == []


def _only_literals(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.IfExp):
        return _only_literals(node.body) and _only_literals(node.orelse)
    return False


def _is_sqlalchemy_construct(node: ast.AST) -> bool:
    """sqlalchemy.select(...) and the like: SQLAlchemy binds their values itself."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call):
        node = node.func.value  # select(...).where(...): a construct refined by its own methods is one too
    return isinstance(node, ast.Call) and _name(node).split(".")[0] in ("sqlalchemy", "select", "insert", "update", "delete")


@pytest.mark.servers
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_study_lock_sends_constant_sql_with_bound_values(servers, backend):
    """The server-side lock is keyed by the study name: the name must never become SQL text."""
    from tuner.coordination import StudyLock
    from tuner.storage import open_storage

    storage = open_storage(servers.url(backend), heartbeat_interval=None)
    sent = []
    sqlalchemy.event.listen(
        storage.engine, "before_cursor_execute", lambda conn, cursor, statement, parameters, *rest: sent.append((statement, parameters))
    )
    name = "x'); DROP TABLE studies; -- \\' OR 1=1"
    with StudyLock(storage, name):
        pass
    lock_statements = {statement for statement, _ in sent if "LOCK" in statement.upper()}
    assert lock_statements == (
        {"SELECT pg_advisory_lock(%s)", "SELECT pg_advisory_unlock(%s)"}
        if backend == "postgresql"
        else {"SELECT GET_LOCK(%s, 600)", "SELECT RELEASE_LOCK(%s)"}
    )
    assert all(len(parameters) == 1 for statement, parameters in sent if statement in lock_statements)
    assert not [statement for statement, _ in sent if "DROP" in statement or name in statement]
    assert "studies" in sqlalchemy.inspect(storage.engine).get_table_names()
    storage.engine.dispose()


# --- Study files and data are data ----------------------------------------------------------------------------


def test_study_file_values_that_look_like_code_are_refused_not_run(tmp_path, monkeypatch):
    from tuner.studyfile import load_study_file

    monkeypatch.chdir(tmp_path)
    study = tmp_path / "evil.toml"
    study.write_text(
        "[study]\nname = \"__import__('os').system('touch pwned1')\"\n"
        "[sampler]\nkind = \"__import__('os').system('touch pwned2')\"\n"
        "[space]\nunits = { low = \"__import__('os').system('touch pwned3')\", high = 64 }\n"
    )
    with pytest.raises(ConfigError):
        load_study_file(path=study)
    assert not list(tmp_path.glob("pwned*"))


class _TouchWhenUnpickled:
    """Unpickling this creates the file: the proof that a loader ran code from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_pickled_objects_in_data_and_inputs_are_refused_unrun(tmp_path):
    from tuner.data import load_tuning_data
    from tuner.images import load_inputs

    marker = tmp_path / "ran"
    payload = np.array([_TouchWhenUnpickled(marker)] * 4, dtype=object)
    pickle.loads(pickle.dumps(payload[0]))  # the payload works ...
    assert marker.exists()
    marker.unlink()
    np.savez(tmp_path / "data.npz", x_train=payload, y_train=payload, x_test=payload, y_test=payload)
    np.save(tmp_path / "input.npy", payload, allow_pickle=True)
    with pytest.raises(DataError):
        load_tuning_data(dataset="mnist", data_path=str(tmp_path / "data.npz"), validation_fraction=0.5, split_seed=0)
    with pytest.raises(InputImageError):
        load_inputs(tmp_path / "input.npy")
    assert not marker.exists()  # ... but no loader unpickled it


def test_a_model_with_code_is_refused_and_its_code_never_runs(tmp_path):
    import keras

    from tuner.predict import load_exported_model

    marker = tmp_path / "ran"
    # A Lambda layer whose code (stored as bytecode in model.keras) creates the marker when the model is rebuilt.
    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")  # noqa: S307 - the attack, built on purpose
    inputs = keras.Input((28 * 28,))
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Lambda(touch)(inputs))).save(tmp_path / "model.keras")
    marker.unlink()  # building the model ran it once
    with pytest.raises(ModelError, match="safe_mode"):
        load_exported_model(model=tmp_path)
    result = invoke(CliRunner(), "predict", "--model", tmp_path, str(next((ROOT / "tests" / "fixtures" / "digits").iterdir())))
    assert result.exit_code == 6 and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    keras.models.load_model(tmp_path / "model.keras", safe_mode=False)  # the control: outside safe mode, the code runs
    assert marker.exists()


# --- Credentials: a password in the storage URL never shows ---------------------------------------------------


@dataclass(frozen=True)
class Account:
    url: str  # with the password
    password: str
    role: str
    admin: sqlalchemy.engine.Engine  # the postgres superuser, on the role's database (it only reads, so the role owns every table)


@pytest.fixture(scope="module")
def account(servers):
    """A login role with a password, owning its own database; both are dropped afterwards."""
    server = make_url(servers.url("postgresql"))  # skips (or fails in CI) like every server test
    role = f"tuner_sec_{secrets.token_hex(4)}"
    password = f"S3cretPw{secrets.token_hex(6)}"
    # pool_pre_ping: tests/test_faults.py restarts the server, and a shared machine may run it meanwhile.
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    quote = engine.dialect.identifier_preparer.quote  # identifiers cannot be bound; the password can
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {quote(role)} LOGIN PASSWORD %s", (password,))
        connection.exec_driver_sql(f"CREATE DATABASE {quote(role)} OWNER {quote(role)}")
    admin = sqlalchemy.create_engine(server.set(database=role), isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        yield Account(
            url=server.set(username=role, password=password, database=role).render_as_string(hide_password=False),
            password=password,
            role=role,
            admin=admin,
        )
    finally:
        admin.dispose()
        with engine.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(role)} WITH (FORCE)")
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {quote(role)}")
        engine.dispose()


def _tuner(*args: str, url: str, cwd: Path, **popen) -> subprocess.Popen:
    # The URL travels in the environment, as the README recommends; it must never come back out.
    env = {**os.environ, "TUNER_STORAGE": url, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def _finished(url: str, name: str) -> int:
    try:
        return Tally.of(optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)).finished
    except KeyError:
        return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"\nPPid:\t{pid}\n" in (entry / "status").read_text():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


class _Lines:
    """Reads a pipe in a thread, so that a test can watch a process's log while it runs."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(pipe.readline, "")), daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> str:
        self._thread.join(timeout)
        return "".join(self.lines)


@pytest.fixture(scope="module")
def interrupted_run(account, tmp_path_factory):
    """`tuner run --workers 2 -v` under a study name full of shell syntax, stopped with Ctrl-C after 3 trials."""
    cwd = tmp_path_factory.mktemp("run")
    (cwd / "fast.toml").write_text(FAST_STUDY)
    process = _tuner(
        "run",
        "-v",
        "--workers",
        "2",
        "--trials",
        "40",
        "--study",
        SHELL_NAME,
        "--study-file",
        "fast.toml",
        "--data",
        str(MNIST_SMALL),
        url=account.url,
        cwd=cwd,
    )
    wait_for(lambda: _finished(account.url, SHELL_NAME) >= 3, process, "3 trials did not finish", interval=0.3)
    worker_commands = [Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode() for child in _children(process.pid)]
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=180)  # the workers get 30 s to record their trials
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"tuner run --workers 2 did not stop after Ctrl-C: {process.communicate()}") from None
    return cwd, process.returncode, stdout + stderr, worker_commands


@pytest.mark.slow
@pytest.mark.servers
def test_run_progress_interrupt_and_worker_commands_hide_the_password(account, interrupted_run):
    cwd, code, output, worker_commands = interrupted_run
    assert code == 130, output
    masked = make_url(account.url).render_as_string(hide_password=True)
    assert f"--storage {masked!r}" in output and "***" in masked  # the resume hint names the storage, masked
    assert len(worker_commands) == 2 and all("tuner run" in command for command in worker_commands)
    assert account.password not in output + "".join(worker_commands)
    # The name with shell syntax reached the workers intact, through no shell.
    assert optuna.load_study(study_name=SHELL_NAME, storage=account.url).study_name == SHELL_NAME
    assert not list(cwd.glob("pwned*"))


@pytest.mark.slow
@pytest.mark.servers
def test_studies_export_report_and_pareto_hide_the_password(account, interrupted_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"TUNER_STORAGE": account.url}
    outputs = []
    for args in (
        ["studies"],
        ["studies", "--json"],
        ["export-best", "--study", SHELL_NAME, "--out", "model"],
        ["report", "--study", SHELL_NAME, "--out", "report.html"],
        ["pareto", "--study", SHELL_NAME],
        ["pareto", "--study", SHELL_NAME, "--json"],
        ["report", "--study", "no such study"],  # an error line
    ):
        result = invoke(runner, *args, env=env)
        outputs.append(result.output)
        assert result.exit_code == (4 if "no such study" in args else 0), result.output
    assert SHELL_NAME in outputs[0] and SHELL_NAME in {info["name"] for info in json.loads(outputs[1])}
    assert "model.keras" in outputs[2] and "report.html" in outputs[3]
    assert account.password not in "".join(outputs)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"model.keras", "model.json", "report.html"} <= {p.name for p in files}
    assert "***" in (tmp_path / "model" / "model.json").read_text()  # the storage is recorded, masked
    for path in files:
        assert account.password.encode() not in path.read_bytes(), path
    with account.admin.connect() as connection:  # nor does the study keep it in its records
        for table in ("study_user_attributes", "study_system_attributes", "trial_user_attributes", "trial_system_attributes"):
            values = connection.exec_driver_sql(f"SELECT value_json FROM {table}").scalars().all()  # noqa: S608 - a fixed table name
            assert not [v for v in values if account.password in v], table


@pytest.mark.servers
def test_a_role_without_rights_on_the_tables_gets_one_line_without_the_password(account, cli):
    """Optuna's tables made by another role: Optuna wraps the refusal in its own error, which once escaped as a traceback."""
    from tuner.storage import open_storage

    database = f"{account.role}_other"
    quote = account.admin.dialect.identifier_preparer.quote
    with account.admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {quote(database)}")
    try:
        superuser = account.admin.url.set(database=database).render_as_string(hide_password=False)
        open_storage(superuser, heartbeat_interval=None).engine.dispose()  # the tables, owned by postgres
        result = invoke(
            cli, "studies", env={"TUNER_STORAGE": make_url(account.url).set(database=database).render_as_string(hide_password=False)}
        )
    finally:
        with account.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote(database)} WITH (FORCE)")
    assert result.exit_code == 4, result.output
    assert (
        result.stderr.strip()
        == f"Error: cannot open storage postgresql database '{database}' on 127.0.0.1:5432: permission denied for table version_info"
    )
    assert account.password not in result.output


@pytest.mark.slow
@pytest.mark.servers
def test_dashboard_startup_hides_the_password_and_listens_on_loopback_only(account, interrupted_run, tmp_path):
    process = _tuner("dashboard", "--port", "0", url=account.url, cwd=tmp_path)
    try:
        lines = [piped(process.stdout).readline() for _ in range(2)]
        port = int(lines[1].split("http://127.0.0.1:")[1].split("/")[0])
        listening = [
            line.split()
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
        ]
        addresses = {
            fields[1].rsplit(":", 1)[0] for fields in listening if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
        }
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1, and nothing on any other interface
    output = "".join(lines) + stdout + stderr
    assert "optuna-dashboard for postgresql+psycopg2://" in output and "***" in output
    assert account.password not in output


@pytest.mark.slow
@pytest.mark.servers
def test_workers_that_lose_the_database_report_it_without_the_password(account, interrupted_run, tmp_path):
    """The role may no longer log in: the workers' and a plain run's retry logs and final errors stay masked."""
    (tmp_path / "fast.toml").write_text(FAST_STUDY)
    name = f"locked-out-{secrets.token_hex(3)}"
    common = ["--trials", "60", "--study", name, "--study-file", "fast.toml", "--data", str(MNIST_SMALL), "--reconnect-timeout", "3"]
    workers = _tuner("run", "--workers", "2", *common, url=account.url, cwd=tmp_path)
    plain = _tuner("run", "-v", *common, url=account.url, cwd=tmp_path)
    plain_log = _Lines(plain.stderr)
    quote = account.admin.dialect.identifier_preparer.quote
    try:
        # Both are mid-run: the plain run logged a finished trial of its own.
        wait_for(
            lambda: any("finished with value" in line for line in plain_log.lines),
            plain,
            "the plain run finished no trial",
            limit=240,
            interval=0.3,
        )
        with account.admin.connect() as connection:
            connection.exec_driver_sql(f"ALTER ROLE {quote(account.role)} NOLOGIN")
            connection.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (account.role,))
        outputs = [workers.communicate(timeout=240), (piped(plain.stdout).read(), plain_log.join(timeout=240))]
        plain.wait(timeout=60)
    finally:
        with account.admin.connect() as connection:
            connection.exec_driver_sql(f"ALTER ROLE {quote(account.role)} LOGIN")
        for process in (workers, plain):
            if process.poll() is None:
                process.kill()
    assert workers.returncode == 4 and plain.returncode == 4, outputs
    last = outputs[0][1].strip().splitlines()[-1]
    assert last.startswith("Error: worker ") and "lost the connection to postgresql database" in last, outputs[0]
    assert "database unreachable" in outputs[1][1] and "retrying" in outputs[1][1]  # the plain run's log lines
    assert account.password not in "".join(out + err for out, err in outputs)
