"""Real faults, injected: PostgreSQL restarted under running workers, SQLite writers SIGKILLed mid-commit,
and `export-best`/`report` writing to a file system that is full or read-only (a real tmpfs, not a mock).

After each, nothing that had finished is lost, no trial stays RUNNING once the run ends, trial numbers
stay contiguous, and an earlier export or report survives byte for byte.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tests.helpers import invoke, one_error_line, spawn_worker, sqlite_file, wait_for
from tuner.exportmeta import ExportRecord
from tuner.results import Tally

# Every fault is injected into real `tuner run` / export-best processes or trainings.
pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("TUNER_REQUIRE_SERVERS") == "1"  # CI: a fault that cannot be injected fails, not skips


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (TUNER_REQUIRE_SERVERS=1)")
    pytest.skip(reason)


def _tuner_run(url: str, study_file: Path, name: str, n_trials: int, *extra: str) -> subprocess.Popen[str]:
    return spawn_worker(url, study_file, name, n_trials, "--heartbeat", "1", "--grace-period", "4", *extra)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _assert_consistent(trials: list[optuna.trial.FrozenTrial], n_trials: int) -> None:
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # contiguous, no gaps, no duplicates
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert Tally.of(trials).finished == n_trials


# --- PostgreSQL restarted under two workers --------------------------------------------------------------------


def _pg_cluster() -> tuple[str, str]:
    """(version, cluster) of this machine's PostgreSQL, as pg_ctlcluster names it."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        _unavailable("no local PostgreSQL cluster to restart (pg_ctlcluster)")
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return versions[-1], "main"


def _pg_ready(url) -> bool:
    command = ["pg_isready", "-q", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    return subprocess.run(command, timeout=30).returncode == 0


@pytest.mark.servers
def test_postgresql_restart_mid_run(servers, tmp_path, fast_study_file, unique_name):
    url = servers.url("postgresql")
    server = make_url(url)
    if server.host not in (None, "127.0.0.1", "localhost"):
        _unavailable(f"the test PostgreSQL on {server.host} is not this machine's")
    version, cluster = _pg_cluster()
    n_trials = 12
    process = _tuner_run(url, fast_study_file, unique_name, n_trials, "--workers", "2", "--reconnect-timeout", "120")
    try:
        wait_for(lambda: Tally.of(_trials(url, unique_name)).finished >= 3, process, "3 trials did not finish", interval=0.05)
        before = {t.number: (t.state, t.value) for t in _trials(url, unique_name) if t.state.is_finished()}
        try:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"], check=True, timeout=120, capture_output=True
            )
        finally:  # whatever happened, leave the server running for the tests after this one
            for _ in range(120):
                if _pg_ready(server):
                    break
                subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"], timeout=120, capture_output=True)
                time.sleep(1)
        assert _pg_ready(server)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # The workers rode it out; a worker that gave up instead must have said so in one line, and the same command resumes.
    assert process.returncode in (0, 4), stderr
    if process.returncode == 4:
        assert stderr.strip().splitlines()[-1].startswith("Error: worker "), stderr
        resumed = _tuner_run(url, fast_study_file, unique_name, n_trials)
        assert resumed.wait(timeout=300) == 0, resumed.communicate()
    trials = _trials(url, unique_name)
    _assert_consistent(trials, n_trials)
    after = {t.number: (t.state, t.value) for t in trials}
    assert {number: after[number] for number in before} == before  # no finished trial lost or changed


# --- SQLite writers SIGKILLed mid-commit ----------------------------------------------------------------------


def _sqlite_check(path: Path) -> str:
    with sqlite3.connect(path) as connection:  # opening it recovers the WAL of a killed writer, as any reader would
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def _running(path: Path) -> set[int]:
    """The numbers of the trials RUNNING in the database now."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            return {row[0] for row in connection.execute("SELECT number FROM trials WHERE state = 'RUNNING'")}
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return set()  # killed before Optuna created its tables: nothing can be running
        raise


def _running_unhit(path: Path, hit: frozenset[int]) -> set[int]:
    return _running(path) - hit if path.exists() else set()


def _wal_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(f"{path}-wal")
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def test_sqlite_survives_repeated_sigkill_mid_commit(tmp_path, fast_study_file):
    database = tmp_path / "study.db"
    url = f"sqlite:///{database}"
    n_trials, rounds, writers = 6, 3, 2  # six kills; two writers at a time also contend for SQLite's lock
    seed = int(os.environ.get("TUNER_FAULT_SEED", time.time_ns() % 10_000))  # random moments, reproducible on demand
    rng = random.Random(seed)
    note = f"(rerun with TUNER_FAULT_SEED={seed})"
    codes: list[int | None] = []
    stale: set[int] = set()  # trials a kill left RUNNING, in any round
    for round_ in range(rounds):
        processes = [_tuner_run(url, fast_study_file, "killed", n_trials, "--threads", "1") for _ in range(writers)]
        for process in processes:
            # A random moment while a trial runs that no kill has hit yet (between trials a kill tests nothing
            # but the lock), then the instant the WAL moves: inside a commit.
            time.sleep(rng.uniform(0, 2.0))
            unhit = functools.partial(_running_unhit, database, frozenset(stale))
            wait_for(unhit, process, f"round {round_}: no trial running {note}", interval=0.01)
            stamp, deadline = _wal_stamp(database), time.monotonic() + 10
            while _wal_stamp(database) == stamp and time.monotonic() < deadline and process.poll() is None:
                pass  # busy-wait: a sleep would let the commit finish
            process.send_signal(signal.SIGKILL)
            process.communicate()
            codes.append(process.returncode)
            assert _sqlite_check(database) == "ok", f"after kill {len(codes)} {note}"
        stale |= _running(database)  # every writer is dead: what is RUNNING now, a kill left so
    assert codes == [-signal.SIGKILL] * rounds * writers, f"a writer exited before it was killed {note}: {codes}"
    assert stale, f"the kills left no trial RUNNING, so they all missed a trial {note}"

    resumed = _tuner_run(url, fast_study_file, "killed", n_trials, "--threads", "1")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert _sqlite_check(database) == "ok"
    trials = _trials(url, "killed")
    _assert_consistent(trials, n_trials)
    # Each killed writer's trial was failed and run again, unless its lineage had used up its retries
    # (tuner.storage: RetryHeartbeatStaleTrialCallback(max_retry=2); six kills can hit one lineage thrice).
    by_number = {t.number: t for t in trials}
    at_limit = {n for n in stale if len(by_number[n].system_attrs.get("retry_history", ())) >= 2}
    assert set(stale) - at_limit <= Tally.of(trials).retried, note


# --- export-best and report on a full and a read-only file system ---------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A real tmpfs mount (root only; the sandbox must allow mounting); unmounted at the end."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _unavailable("mounting a tmpfs needs root")
    point = tmp_path / "mnt"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True).returncode != 0:
        _unavailable("this machine does not allow mounting a tmpfs")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True, capture_output=True)

    try:
        yield point, remount
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_full_and_read_only_disks_keep_the_previous_export_and_report(cli, trained_study, tmp_path, tmpfs):
    mount, remount = tmpfs
    source, name = trained_study
    copy = tmp_path / "study.db"
    with sqlite3.connect(sqlite_file(source)) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    url = f"sqlite:///{copy}"
    model, report = mount / "model", mount / "report.html"
    assert invoke(cli, "export-best", "--storage", url, "--out", model, "--quiet").exit_code == 0
    assert invoke(cli, "report", "--storage", url, "--out", report).exit_code == 0
    exported, reported = _snapshot(model), report.read_bytes()

    # Full: room for half an export more, so the second copy (written beside the first) cannot fit.
    used = shutil.disk_usage(mount).used
    remount(f"size={used + sum(map(len, exported.values())) // 2}")
    one_error_line(
        invoke(cli, "export-best", "--storage", url, "--out", model, "--force", "--quiet"), 5, "No space left on device", "unchanged"
    )
    one_error_line(invoke(cli, "report", "--storage", url, "--out", report), 2, "No space left on device")
    assert _snapshot(model) == exported and report.read_bytes() == reported
    assert sorted(p.name for p in mount.iterdir()) == ["model", "report.html"]  # no half-written staging left behind

    # Read-only: export-best refuses before it trains, report before it draws; both leave the old files.
    remount("ro")
    # That it refuses before training, within 20 s, is measured by benchmarks/wall_clock.py.
    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", model, "--force", "--quiet"), 5, "read-only file system")
    refused = invoke(cli, "report", "--storage", url, "--out", report)  # click's own writable check on --out answers first
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines()[-1].endswith("is not writable."), refused.output
    one_error_line(invoke(cli, "export-best", "--storage", url, "--out", mount / "new", "--quiet"), 5, "read-only file system")
    assert _snapshot(model) == exported and report.read_bytes() == reported
    assert sorted(p.name for p in mount.iterdir()) == ["model", "report.html"]
    record = ExportRecord.of_study(optuna.load_study(study_name=name, storage=url).user_attrs)
    assert record is not None and record.path == str(model)  # still the first export
