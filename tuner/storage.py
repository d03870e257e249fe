"""Study storage: opening Optuna's RDB storage for any SQLAlchemy URL, finding studies in it, and telling database errors apart.

Every failure to open or use a database becomes one ``StorageError`` (or ``ConfigError``) line here.
URLs in messages: tuner.storageurl; workers sharing a study: tuner.coordination.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from tuner.convergence import estimate_convergence
from tuner.errors import ConfigError, StorageError, StudyNotFoundError
from tuner.records import VAL_ACCURACY_ATTR
from tuner.storageurl import describe_storage, mask_url, storage_location
from tuner.text import first_line
from tuner.trials import best_by_value, state_counts

__all__ = [
    "StudyInfo",
    "open_storage",
    "load_study",
    "list_studies",
    "storage_failure",
    "is_connection_error",
    "database_message",
]

_log = logging.getLogger(__name__)

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
    engine_kwargs = _engine_kwargs(parsed, url, must_exist=must_exist)
    try:
        storage = _create_storage(url, engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    except ImportError as exc:  # Optuna re-raises a missing driver as a plain ImportError
        missing = getattr(exc.__cause__, "name", None) or getattr(exc, "name", None) or parsed.drivername
        extra = _DRIVER_EXTRAS.get(backend, backend)
        raise StorageError(
            f"the database driver for {parsed.drivername} is not installed ({missing}); install it with: pip install 'tuner[{extra}]'"
        ) from None
    except (ValueError, KeyError, IndexError) as exc:  # Optuna formats the URL as a template: braces break it
        raise ConfigError(f"invalid storage URL {mask_url(url)!r}: {database_message(exc)}") from None
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"invalid storage URL {mask_url(url)!r}: {exc}") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as exc:
        # (Optuna wraps what fails inside its own sessions, such as a role without rights on the tables.)
        raise StorageError(f"cannot open storage {storage_location(url)}: {database_message(exc)}") from None
    if backend == "sqlite":
        _enable_wal(storage)
    return storage


def _engine_kwargs(parsed: URL, url: str, *, must_exist: bool) -> dict[str, Any]:
    """SQLAlchemy engine settings per backend; refuses a missing SQLite file when ``must_exist``."""
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if must_exist and not _is_file(database):
            raise StudyNotFoundError(
                f"no study database at {_absolute(database) if database else mask_url(url)}",
                remedy="run a study first, or give another {storage_url}",
            )
        # Several local workers share the file: wait for the lock instead of failing at once.
        return {"connect_args": {"timeout": 60}}
    # A worker outlives database restarts: test pooled connections before use instead of failing on a dead one.
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    # (Reading the driver name from the string: asking SQLAlchemy would load the dialect, which may not exist.)
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "postgresql+psycopg2cffi"):
        engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}
    return engine_kwargs


def _create_storage(
    url: str, engine_kwargs: dict[str, Any], *, heartbeat_interval: int | None, grace_period: int | None
) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        # Heartbeats and the stale-trial retry are marked experimental in Optuna 5; we rely on them.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2) if heartbeat_interval else None
        for attempt in range(3):
            try:
                return _HeartbeatRetryingStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=retry,
                )
            except sqlalchemy.exc.SQLAlchemyError as exc:
                # Workers starting together on an empty database all create Optuna's tables; the losers
                # see "already exists" (or PostgreSQL's duplicate type) and find the tables made on retry.
                if attempt == 2 or not (isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)):
                    raise
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable: the last attempt returns or raises")


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
                    _log.warning(
                        "heartbeat of trial id %d not written (%s); trying again at the next beat", trial_id, database_message(exc)
                    )
                    return
                time.sleep(delay)


def load_study(*, storage_url: str, study_name: str | None) -> optuna.Study:
    """Load an existing study; with no name, the storage's only study.

    Args:
        storage_url: SQLAlchemy URL of the study database (a SQLite file must exist).
        study_name: the study; None for the storage's only study.

    Raises ``StudyNotFoundError`` (no such study, or several and no name) or ``StorageError``.

    Example::

        study = load_study(storage_url="sqlite:///tuner.db", study_name="mnist-mlp")
        print(len(study.trials))
    """
    storage = open_storage(storage_url, must_exist=True)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            found = ", ".join(names) if names else "none"
            raise StudyNotFoundError(
                f"{describe_storage(storage_url)} holds {len(names)} studies ({found})", remedy="choose one with {study_name}"
            )
        study_name = names[0]
    if study_name not in names:
        raise StudyNotFoundError(
            f"no study named {study_name!r} in {describe_storage(storage_url)} (studies: {', '.join(names) or 'none'})"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def list_studies(*, storage_url: str) -> list[StudyInfo]:
    """Every study in the storage with its trial counts, best trial by validation loss and convergence.

    Args:
        storage_url: SQLAlchemy URL of the study database (a SQLite file must exist).

    Example::

        for info in list_studies(storage_url="sqlite:///tuner.db"):
            print(info.name, info.n_complete, info.best_value)
    """
    storage = open_storage(storage_url, must_exist=True)
    infos = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = state_counts(trials)
        best = best_by_value(trials, direction=study.direction)
        infos.append(
            StudyInfo(
                name=summary.study_name,
                n_trials=len(trials),
                n_complete=counts["COMPLETE"],
                n_pruned=counts["PRUNED"],
                n_fail=counts["FAIL"],
                n_running=counts["RUNNING"],
                best_value=best.value if best else None,
                best_trial=best.number if best else None,
                best_val_accuracy=best.user_attrs.get(VAL_ACCURACY_ATTR) if best else None,
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


def database_message(exc: BaseException) -> str:
    """The driver's own first line of the database error inside ``exc`` (no SQL, no parameters); else ``exc``'s first line."""
    cause = _database_error(exc)
    if cause is None:
        return first_line(exc)
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
    if isinstance(cause, sqlalchemy.exc.PendingRollbackError) and cause.code == _INVALIDATED_TRANSACTION:
        return True  # the connection under an open transaction was lost; a later statement on it says only this
    return isinstance(cause, sqlalchemy.exc.DBAPIError) and cause.connection_invalidated


# SQLAlchemy's error code for "Can't reconnect until invalid transaction is rolled back": raised when the
# connection a transaction ran on was invalidated (the server went away), unlike a rollback after a failed flush.
_INVALIDATED_TRANSACTION = "8s2b"


def storage_failure(exc: BaseException) -> StorageError | None:
    """The one-line ``StorageError`` for a database error raised after the storage was opened, else None.

    A server that goes away, a full disk or a damaged schema surface as SQLAlchemy errors, possibly wrapped
    in Optuna's ``StorageInternalError``; they are the user's to fix, like any other storage problem.
    """
    cause = _database_error(exc)
    if cause is None:
        return None
    hint = " (finished trials are saved; run the command again once the database is back)" if is_connection_error(exc) else ""
    return StorageError(f"the study database failed: {database_message(cause)}{hint}")


def _database_error(exc: BaseException) -> sqlalchemy.exc.SQLAlchemyError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, sqlalchemy.exc.SQLAlchemyError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
