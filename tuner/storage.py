"""Study storage: one place that opens Optuna's RDB storage for any SQLAlchemy URL."""

from __future__ import annotations

import datetime
import hashlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from tuner.convergence import estimate_convergence
from tuner.errors import ConfigError, StorageError, StudyNotFoundError

__all__ = [
    "DEFAULT_STORAGE",
    "StudyInfo",
    "mask_url",
    "describe_storage",
    "open_storage",
    "load_study",
    "list_studies",
    "StudyLock",
    "storage_failure",
    "fail_stale_trials",
    "is_connection_error",
    "first_line",
    "storage_location",
]

_log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///tuner.db"
# A heartbeat write that fails is tried again after these pauses (seconds), well within one interval.
HEARTBEAT_RETRY_DELAYS = (0.5, 1.0, 2.0)
_DRIVER_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
# libpq waits for the operating system's TCP timeout (minutes) on a silent host; PyMySQL has its own 10 s.
_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class StudyInfo:
    name: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_fail: int
    n_running: int
    best_value: float | None
    best_trial: int | None
    best_val_accuracy: float | None
    convergence: str = ""  # how much the best value moved over the last trials (tuner.convergence)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print or store."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable storage URL>"


def describe_storage(url: str) -> str:
    """A human description: the absolute file for SQLite, the masked URL otherwise."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return f"SQLite file {Path(parsed.database).resolve()}"
    return mask_url(url)


def open_storage(
    url: str, *, must_exist: bool = False, heartbeat_interval: int | None = 60, grace_period: int | None = 180
) -> optuna.storages.RDBStorage:
    """Open (and on first use create) the storage; every failure becomes one ``StorageError`` line.

    Heartbeats let another worker mark a trial of a killed worker as failed and retry it.
    """
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(
            f"invalid storage URL {mask_url(url)!r} (expected e.g. sqlite:///tuner.db or postgresql+psycopg2://user@host/db)"
        ) from None
    backend = parsed.get_backend_name()
    engine_kwargs: dict = {}
    if backend == "sqlite":
        database = parsed.database or ""
        if must_exist and not _is_file(database):
            raise StudyNotFoundError(
                f"no study database at {_absolute(database) if database else mask_url(url)} (run 'tuner run' first or pass --storage)"
            )
        # Several local workers share the file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        # A worker outlives database restarts: test pooled connections before use instead of failing on a dead one.
        engine_kwargs["pool_pre_ping"] = True
        # (Reading the driver name from the string: asking SQLAlchemy would load the dialect, which may not exist.)
        if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+psycopg2cffi"):
            engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}
    try:
        with warnings.catch_warnings():
            # Heartbeats and the stale-trial retry are marked experimental in Optuna 5; we rely on them.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat_interval else None
            for attempt in range(3):
                try:
                    storage = _HeartbeatRetryingStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=retry,
                    )
                    break
                except sqlalchemy.exc.SQLAlchemyError as exc:
                    # Workers starting together on an empty database all create Optuna's tables; the losers
                    # see "already exists" (or PostgreSQL's duplicate type) and find the tables made on retry.
                    if attempt == 2 or not (isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)):
                        raise
                    time.sleep(0.2 * (attempt + 1))
    except ImportError as exc:  # Optuna re-raises a missing driver as a plain ImportError
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or parsed.drivername
        extra = _DRIVER_EXTRAS.get(backend, backend)
        raise StorageError(
            f"the database driver for {parsed.drivername} is not installed ({missing}); install it with: pip install 'tuner[{extra}]'"
        ) from None
    except (ValueError, KeyError, IndexError) as exc:  # Optuna formats the URL as a template: braces break it
        raise ConfigError(f"invalid storage URL {mask_url(url)!r}: {first_line(exc)}") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"invalid storage URL {mask_url(url)!r}: {exc}") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as exc:
        # (Optuna wraps what fails inside its own sessions, such as a role without rights on the tables.)
        raise StorageError(f"cannot open storage {storage_location(url)}: {first_line(exc)}") from None
    if backend == "sqlite":
        _enable_wal(storage)
    return storage


class _HeartbeatRetryingStorage(optuna.storages.RDBStorage):
    """Optuna's storage, whose heartbeat writes survive a transient database error.

    Optuna's heartbeat thread stops at the first exception of ``record_heartbeat``, so one database
    blip would silence a live trial for good and another worker would fail it a grace period later.
    Here a failed write is retried a few times, and if it still fails the thread goes on to the next beat.
    """

    def record_heartbeat(self, trial_id: int) -> None:
        for delay in (*HEARTBEAT_RETRY_DELAYS, None):
            try:
                super().record_heartbeat(trial_id)
                return
            except Exception as exc:
                if delay is None:
                    _log.warning("heartbeat of trial id %d not written (%s); trying again at the next beat", trial_id, first_line(exc))
                    return
                time.sleep(delay)


def load_study(url: str, study_name: str | None) -> optuna.Study:
    """Load an existing study; with no name, the storage's only study."""
    storage = open_storage(url, must_exist=True)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            found = ", ".join(names) if names else "none"
            raise StudyNotFoundError(f"{describe_storage(url)} holds {len(names)} studies ({found}); choose one with --study")
        study_name = names[0]
    if study_name not in names:
        raise StudyNotFoundError(f"no study named {study_name!r} in {describe_storage(url)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=storage)


def list_studies(url: str) -> list[StudyInfo]:
    storage = open_storage(url, must_exist=True)
    infos = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = (
            min(complete, key=lambda t: t.value)
            if complete and study.direction == optuna.study.StudyDirection.MINIMIZE
            else (max(complete, key=lambda t: t.value) if complete else None)
        )
        infos.append(
            StudyInfo(
                name=summary.study_name,
                n_trials=len(trials),
                n_complete=states.count(optuna.trial.TrialState.COMPLETE),
                n_pruned=states.count(optuna.trial.TrialState.PRUNED),
                n_fail=states.count(optuna.trial.TrialState.FAIL),
                n_running=states.count(optuna.trial.TrialState.RUNNING),
                best_value=best.value if best else None,
                best_trial=best.number if best else None,
                best_val_accuracy=best.user_attrs.get("val_accuracy") if best else None,
                convergence=estimate_convergence(study).describe(),
            )
        )
    return infos


def _absolute(database: str) -> str:
    try:
        return str(Path(database).resolve())
    except (OSError, ValueError):  # a name the file system refuses: show it as given
        return database


def _is_file(database: str) -> bool:
    try:
        return bool(database) and Path(database).is_file()
    except (OSError, ValueError):  # a name the file system refuses (too long, NUL) names no database
        return False


def _enable_wal(storage: optuna.storages.RDBStorage) -> None:
    # WAL lets readers (the dashboard, a report) work while a trial writes; the mode is stored in the file.
    try:
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sqlalchemy.exc.SQLAlchemyError:
        pass  # a read-only or network file system keeps the default journal; correctness is unaffected


def storage_location(url: str) -> str:
    """Backend, database and host of a storage URL, for messages; never the user or password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.get_backend_name()} database {parsed.database!r} on {host}{port}"


def first_line(exc: BaseException) -> str:
    """The driver's own first line of a database error (no SQL, no parameters)."""
    cause = _database_error(exc) or exc
    text = str(getattr(cause, "orig", None) or cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it, e.g. inside Optuna's StorageInternalError) means the database was unreachable.

    SQLite's "database is locked" is an OperationalError too: it is just as transient.
    """
    cause = _database_error(exc)
    if cause is None:
        return False
    if isinstance(cause, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)):
        return True
    return isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated


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


def storage_failure(exc: BaseException) -> StorageError | None:
    """The one-line ``StorageError`` for a database error raised after the storage was opened, else None.

    A server that goes away, a full disk or a damaged schema surface as SQLAlchemy errors, possibly wrapped
    in Optuna's ``StorageInternalError``; they are the user's to fix, like any other storage problem.
    """
    cause = _database_error(exc)
    if cause is None:
        return None
    hint = " (finished trials are saved; run the command again once the database is back)" if is_connection_error(exc) else ""
    return StorageError(f"the study database failed: {first_line(cause)}{hint}")


def _database_error(exc: BaseException) -> sqlalchemy.exc.SQLAlchemyError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, sqlalchemy.exc.SQLAlchemyError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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
        self._engine = storage.engine
        self._backend = self._engine.url.get_backend_name()
        digest = hashlib.sha256(f"{self._engine.url.database}/{study_name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL: one bigint per lock
        self._name = f"tuner-{digest.hex()[:48]}"  # MySQL: lock names are server-wide and at most 64 characters
        self._held: object | None = None

    def acquire(self) -> None:
        if self._held is not None:
            return
        if self._backend == "sqlite":
            self._held = self._lock_file()
            return
        connection = self._engine.connect()
        try:
            if self._backend == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_lock(%s)", (self._key,))
            else:
                got = connection.exec_driver_sql("SELECT GET_LOCK(%s, 600)", (self._name,)).scalar()
                if got != 1:
                    raise StorageError(f"waited 600 s for another worker's trial lock in {storage_location(str(self._engine.url))}")
            connection.commit()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        self._held = connection

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self._backend == "sqlite":
            held.close()  # closing the descriptor drops its flock
            return
        try:
            statement = "SELECT pg_advisory_unlock(%s)" if self._backend == "postgresql" else "SELECT RELEASE_LOCK(%s)"
            held.exec_driver_sql(statement, (self._key if self._backend == "postgresql" else self._name,))
            held.commit()
        except sqlalchemy.exc.SQLAlchemyError:
            held.invalidate()  # the server dropped this connection, and with it the lock
        finally:
            held.close()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _lock_file(self):
        import fcntl

        database = self._engine.url.database
        if not database or database == ":memory:":
            return _NoLock()  # an in-memory database has a single process
        handle = open(f"{database}.lock", "ab")  # noqa: SIM115 (the open handle is the lock)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        return handle


class _NoLock:
    def close(self) -> None:
        pass
