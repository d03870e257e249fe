"""One storage suite on SQLite, PostgreSQL and MariaDB: create, join, resume, counts, the study lock, and
what a worker does when the database is unreachable or drops in the middle of a run."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tests.helpers import MNIST_SMALL, invoke, objective_value, spawn_worker
from tuner.config import resolve_run_config
from tuner.coordination import StudyLock
from tuner.errors import ConfigError
from tuner.results import RunStart, Tally
from tuner.runner import prepare_study, run_study
from tuner.storage import list_studies, load_study, open_storage


def _config(study_file, url, name, n_trials, **overrides):
    return resolve_run_config(
        study_file=study_file, storage_url=url, study_name=name, data_path=str(MNIST_SMALL), n_trials=n_trials, **overrides
    )


@pytest.mark.slow
def test_create_join_resume_and_count(storage_url, fast_study_file, unique_name):
    first = run_study(config=_config(fast_study_file, storage_url, unique_name, 2))
    assert (first.n_finished, first.new_trials) == (2, 2)
    provenance = load_study(storage_url=storage_url, study_name=unique_name).user_attrs["tuner"]
    assert provenance["data_path"] == str(MNIST_SMALL) and provenance["seed"] == 3

    # A second worker with another seed would change what the study measures: refused, one line.
    with pytest.raises(ConfigError, match="was created with seed 3, this run has 11"):
        run_study(config=_config(fast_study_file, storage_url, unique_name, 3, seed=11))
    # Without --seed it takes the study's, joins the existing study and tops it up to 3.
    starts: list[RunStart] = []
    second = run_study(config=_config(fast_study_file, storage_url, unique_name, 3), on_start=starts.append)
    assert (starts[0].n_finished_before, starts[0].n_baselines_enqueued, second.new_trials) == (2, 0, 1)
    study = load_study(storage_url=storage_url, study_name=unique_name)
    assert study.user_attrs["tuner"] == provenance  # the creator's provenance stays
    assert [t.number for t in study.trials] == [0, 1, 2]

    # Resuming a finished study runs nothing.
    third = run_study(config=_config(fast_study_file, storage_url, unique_name, 3))
    assert third.new_trials == 0 and len(load_study(storage_url=storage_url, study_name=unique_name).trials) == 3

    info = next(i for i in list_studies(storage_url=storage_url) if i.name == unique_name)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert (info.n_trials, info.n_complete, info.n_running, info.n_fail) == (3, len(complete), 0, 3 - len(complete))
    assert info.best_trial == min(complete, key=objective_value).number


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # warning filters are not thread-safe
def test_workers_creating_one_study_at_once_set_it_up_once(storage_url, tiny_study_file, unique_name):
    config = _config(tiny_study_file, storage_url, unique_name, 10)
    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(lambda _: prepare_study(config), range(4)))
    assert sorted((p.start.n_portfolio_enqueued, p.start.n_baselines_enqueued) for p in prepared) == [(0, 0), (0, 0), (0, 0), (2, 3)]
    study = load_study(storage_url=storage_url, study_name=unique_name)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.WAITING for t in study.trials)
    assert [bool(t.user_attrs.get("portfolio")) for t in study.trials] == [True, True, False, False, False]
    assert all(t.user_attrs.get("baseline") for t in study.trials[2:])
    assert "tuner" in study.user_attrs


def test_study_lock_excludes_other_workers(storage_url, unique_name):
    first = StudyLock(open_storage(storage_url), unique_name)
    second = StudyLock(open_storage(storage_url), unique_name)
    other_study = StudyLock(open_storage(storage_url), unique_name + "-other")
    entered = threading.Event()

    def take_second() -> None:
        with second:
            entered.set()

    first.acquire()
    thread = threading.Thread(target=take_second)
    thread.start()
    if not storage_url.startswith("sqlite"):  # SQLite's lock covers the whole (local) file; servers lock per study
        with other_study:
            pass
    assert not entered.wait(1.0)
    first.release()
    assert entered.wait(10.0)
    thread.join()
    first.release()  # releasing twice is harmless


@pytest.mark.parametrize("url", ["postgresql+psycopg2://tuner:secret@127.0.0.1:1/tuner", "mysql+pymysql://tuner:secret@127.0.0.1:1/tuner"])
def test_unreachable_database_is_one_line_without_password(cli, tmp_path, fast_study_file, url):
    for args in (("run", "--trials", 1, "--study-file", fast_study_file, "--data", MNIST_SMALL), ("studies",)):
        result = invoke(cli, *args, "--storage", url)
        assert result.exit_code == 4, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"Error: cannot open storage {make_url(url).get_backend_name()} database 'tuner' on 127.0.0.1:1: "
        ), lines
        assert "secret" not in result.output


def _free_port_below_the_ephemeral_range() -> int:
    """A free port the kernel never hands out as a connection's source port: while the proxy is cut, an
    outgoing connection could otherwise take the port the proxy listens on again (EADDRINUSE on restore)."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768  # elsewhere: Linux's default, below macOS's
    for port in random.sample(range(20000, min(low, 32768)), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class _Proxy:
    """A TCP forwarder to the database that can drop every connection and refuse new ones for a while."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port_below_the_ephemeral_range()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            assert self.listener is not None, "restore() opened it"
            # Shut down first: a close() alone leaves the socket listening while the accept thread is
            # blocked in accept() on it (Linux), so restore() could not bind the port again.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _worker(url: str, study_file: Path, name: str, n_trials: int, *extra: str) -> subprocess.Popen[str]:
    return spawn_worker(url, study_file, name, n_trials, "--threads", "1", "--heartbeat", "1", "--grace-period", "4", *extra)


def _wait_for_finished(url: str, name: str, count: int, process: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while time.time() < deadline and process.poll() is None:
        try:
            if Tally.of(optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)).finished >= count:
                return
        except KeyError:
            pass  # not created yet
        time.sleep(0.3)
    raise AssertionError(f"{count} trials did not finish in time: {process.communicate(timeout=30)}")


@pytest.mark.slow
@pytest.mark.servers
def test_worker_rides_out_a_database_that_drops_and_comes_back(servers, tmp_path, fast_study_file, unique_name):
    direct = servers.url("postgresql")
    server = make_url(direct)
    proxy = _Proxy((server.host or "127.0.0.1", server.port or 5432))
    # Trust authentication ignores the password; it is here to show that it never reaches the output.
    proxied = server.set(port=proxy.port, password="s3cret-pw").render_as_string(hide_password=False)
    worker = _worker(proxied, fast_study_file, unique_name, 6)
    _wait_for_finished(direct, unique_name, 2, worker)
    proxy.cut()
    time.sleep(4)
    proxy.restore()
    stdout, stderr = worker.communicate(timeout=180)
    assert worker.returncode == 0, stderr
    assert "database unreachable" in stderr and "retrying" in stderr
    assert "s3cret-pw" not in stdout + stderr
    trials = optuna.load_study(study_name=unique_name, storage=direct).get_trials(deepcopy=False)
    assert Tally.of(trials).finished == 6
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.slow
@pytest.mark.servers
def test_worker_gives_up_cleanly_when_the_database_stays_away(servers, tmp_path, fast_study_file, unique_name):
    direct = servers.url("postgresql")
    server = make_url(direct)
    proxy = _Proxy((server.host or "127.0.0.1", server.port or 5432))
    proxied = server.set(port=proxy.port, password="s3cret-pw").render_as_string(hide_password=False)
    worker = _worker(proxied, fast_study_file, unique_name, 50, "--reconnect-timeout", "5")
    _wait_for_finished(direct, unique_name, 1, worker)
    finished = Tally.of(optuna.load_study(study_name=unique_name, storage=direct).get_trials(deepcopy=False)).finished
    proxy.cut()
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 4, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"Error: lost the connection to postgresql database '{server.database}' on 127.0.0.1:{proxy.port} for more than 5 s"
    ), stderr
    assert "s3cret-pw" not in stdout + stderr
    trials = optuna.load_study(study_name=unique_name, storage=direct).get_trials(deepcopy=False)
    assert Tally.of(trials).finished >= finished  # nothing that had finished was lost


def test_a_transaction_whose_connection_was_lost_is_a_connection_error_and_a_failed_flush_is_not():
    import sqlalchemy

    from tuner.storage import is_connection_error

    lost = sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back.", code="8s2b")
    flush = sqlalchemy.exc.PendingRollbackError("This Session's transaction has been rolled back due to a previous exception", code="7s2a")
    assert is_connection_error(RuntimeError("storage failed")) is False
    assert is_connection_error(lost) and not is_connection_error(flush)
