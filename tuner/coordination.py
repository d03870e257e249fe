"""Workers sharing one study: the study lock around "count the trials, then take one", and the repair of dead workers' trials."""

from __future__ import annotations

import datetime
import hashlib
import warnings
from typing import IO, Protocol

import optuna
import sqlalchemy

from tuner.errors import StorageError
from tuner.storageurl import storage_location

__all__ = ["StudyLock", "fail_stale_trials"]


class StudyLock:
    """A lock, held in the study's own database, around "count the trials, then take one".

    Every worker of a study, on this machine or another, takes it before deciding whether the study
    needs another trial and releases it once that trial is RUNNING, so that N workers never start
    more than the N-th trial between them, and trial numbers stay 0..N-1. PostgreSQL and MySQL
    release the lock when the holder's connection drops (a killed worker never blocks the others).
    SQLite is local, so an advisory ``flock`` on a lock file beside the database does (for all its
    studies at once). Never on the database file itself: closing any descriptor of that file drops
    every POSIX lock SQLite holds on it in this process, after which another process can delete the
    WAL file under a live connection and that connection's later writes are lost.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self.storage = storage
        self._kind = _lock_kind(storage.engine, study_name)
        self._held: _HeldLock | None = None

    def acquire(self) -> None:
        if self._held is None:
            self._held = self._kind.acquire()

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _HeldLock(Protocol):
    def release(self) -> None: ...


class _LockKind(Protocol):
    def acquire(self) -> _HeldLock: ...


def _lock_kind(engine: sqlalchemy.engine.Engine, study_name: str) -> _LockKind:
    digest = hashlib.sha256(f"{engine.url.database}/{study_name}".encode()).digest()
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        return _FileLock(engine.url.database)
    if backend == "postgresql":
        return _ServerLock(engine, _AdvisoryLock(key=int.from_bytes(digest[:8], "big", signed=True)))  # one bigint per lock
    return _ServerLock(engine, _NamedLock(name=f"tuner-{digest.hex()[:48]}"))  # MySQL: server-wide names of at most 64 characters


class _ServerStatements(Protocol):
    """How one server takes and gives back a lock on a connection (constant SQL, bound values: see tests/test_security.py)."""

    def take(self, connection: sqlalchemy.engine.Connection) -> None: ...

    def give_back(self, connection: sqlalchemy.engine.Connection) -> None: ...


class _ServerLock:
    """A lock the database server holds for one connection, and drops when that connection does (a killed worker's too)."""

    def __init__(self, engine: sqlalchemy.engine.Engine, statements: _ServerStatements) -> None:
        self.engine, self.statements = engine, statements

    def acquire(self) -> _HeldLock:
        connection = self.engine.connect()
        try:
            self.statements.take(connection)
            connection.commit()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        return _HeldConnection(connection, self.statements)


class _HeldConnection:
    def __init__(self, connection: sqlalchemy.engine.Connection, statements: _ServerStatements) -> None:
        self.connection, self.statements = connection, statements

    def release(self) -> None:
        try:
            self.statements.give_back(self.connection)
            self.connection.commit()
        except sqlalchemy.exc.SQLAlchemyError:
            self.connection.invalidate()  # the server dropped this connection, and with it the lock
        finally:
            self.connection.close()


class _AdvisoryLock:
    """PostgreSQL: a session-level advisory lock on a 64-bit key."""

    def __init__(self, *, key: int) -> None:
        self.key = key

    def take(self, connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("SELECT pg_advisory_lock(%s)", (self.key,))

    def give_back(self, connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (self.key,))


class _NamedLock:
    """MySQL and MariaDB: a named user lock (GET_LOCK), which gives up after 600 s."""

    def __init__(self, *, name: str) -> None:
        self.name = name

    def take(self, connection: sqlalchemy.engine.Connection) -> None:
        if connection.exec_driver_sql("SELECT GET_LOCK(%s, 600)", (self.name,)).scalar() != 1:
            location = storage_location(str(connection.engine.url))
            raise StorageError(f"waited 600 s for another worker's trial lock in {location}")

    def give_back(self, connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (self.name,))


class _FileLock:
    """SQLite: ``flock`` on ``<database>.lock``; an in-memory database has one process and needs none."""

    def __init__(self, database: str | None) -> None:
        self.database = database

    def acquire(self) -> _HeldLock:
        import fcntl

        if not self.database or self.database == ":memory:":
            return _NothingHeld()
        handle = open(f"{self.database}.lock", "ab")  # noqa: SIM115 (the open handle is the lock; _HeldFile closes it)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        return _HeldFile(handle)


class _HeldFile:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def release(self) -> None:
        self.handle.close()  # closing the descriptor drops its flock


class _NothingHeld:
    def release(self) -> None:
        pass


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.RDBStorage) -> None:
    """Fail, and queue for retry, the trials of dead workers: Optuna's heartbeat sweep, with one gap closed.

    Optuna's sweep skips a RUNNING trial that has no heartbeat row, so a worker killed between creating
    its trial and writing the first heartbeat left that trial RUNNING for ever, and a study counting it
    waited for it. Such a trial, once older than the grace period, gets one heartbeat written on its
    behalf; nobody writes another, so a grace period later the sweep fails and retries it.
    """
    interval = storage.get_heartbeat_interval()
    if interval is None:
        return
    grace = datetime.timedelta(seconds=storage.grace_period or 2 * interval)
    now = datetime.datetime.now()  # Optuna stamps datetime_start with the worker's local clock
    old = [
        t._trial_id
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if t.datetime_start and now - t.datetime_start > grace
    ]
    if old:
        heartbeats = sqlalchemy.table("trial_heartbeats", sqlalchemy.column("trial_id"))  # Optuna's table
        with storage.engine.connect() as connection:
            beating = set(connection.execute(sqlalchemy.select(heartbeats.c.trial_id).where(heartbeats.c.trial_id.in_(old))).scalars())
        for trial_id in old:
            if trial_id not in beating:
                storage.record_heartbeat(trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
